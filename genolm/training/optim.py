"""The optimizer of both recipes (pretraining and fine-tuning): AdamW with one weight-decay rule."""

from __future__ import annotations

import torch
from torch import nn

NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm)


def decay_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(decay, no_decay)``: the trainable parameters of ``model`` split by the weight-decay rule.

    No weight decay on parameters of fewer than two dimensions (biases, LayerNorm weights and biases, IA3
    scaling vectors) nor on embedding tables (``nn.Embedding`` weights, also when another module shares
    them, e.g. a tied LM-head decoder); every other trainable weight matrix decays. Frozen parameters are
    left out; a parameter shared by several modules is listed once.
    """
    embedding_ids = {
        id(param)
        for module in model.modules()
        if isinstance(module, NO_DECAY_MODULES)
        for param in module.parameters(recurse=False)
    }
    decay, no_decay = [], []
    for param in model.parameters():  # each shared parameter once
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or id(param) in embedding_ids else decay).append(param)
    return decay, no_decay


def fused_adamw_supported(params: list[nn.Parameter]) -> bool:
    """Whether PyTorch has a fused AdamW kernel for every parameter: floating point, on a device type with
    fused optimizer kernels (CUDA, CPU, ...; not XLA)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    devices = set(_get_fused_kernels_supported_devices())
    return bool(params) and all(p.is_floating_point() and p.device.type in devices for p in params)


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model``: two groups, ``weight_decay`` and 0.0 (see
    :func:`decay_groups` for which parameters do not decay).

    ``fused``: one fused kernel for the whole update (None: wherever :func:`fused_adamw_supported`, so build
    the optimizer after the model is on its device); otherwise PyTorch's default, the multi-tensor
    (``foreach``) implementation on devices that have it."""
    decay, no_decay = decay_groups(model)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if fused is None:
        fused = fused_adamw_supported(decay + no_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)

__all__ = ["NO_DECAY_MODULES", "build_optimizer", "decay_groups", "fused_adamw_supported"]
