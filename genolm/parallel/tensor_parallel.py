"""Tensor parallelism (Megatron-style) of genolm models on a 2-D mesh: data / FSDP x model.

Inside each ``GenoLMLayer`` the attention ``query`` / ``key`` / ``value`` and the feed-forward ``up``
projections are column-parallel (their output features, hence whole attention heads, are split over the model
axis) and the attention ``output`` and feed-forward ``down`` projections row-parallel (their input features
split; the partial outputs are summed), so a layer needs one reduction per block in the forward pass. The
attention reshapes use the local head count, so the model file is the same with and without it.

Two implementations of the same partition:

- ``xla_fsdp``: :func:`xla_partition_spec` gives each parameter its 2-D SPMD partition spec over the axes
  ``("fsdp", "model")``; the embeddings split the hidden dimension and the LM head's decoder the vocabulary
  over ``"model"``; the compiler inserts the collectives.
- ``fsdp``: :func:`apply_tensor_parallel` applies ``torch.distributed.tensor.parallel``'s ``ColwiseParallel`` /
  ``RowwiseParallel`` to each layer on the ``"tp"`` dimension of a ``DeviceMesh`` (torchtitan's way); FSDP2
  then shards every parameter over ``"dp"``. Embeddings and heads are sharded by FSDP2 only.

SwiGLU's ``up`` projection holds the gate and the linear halves one after the other; split column-wise, each
device holds a slice of one half only, so its output stays a ``DTensor`` and ``chunk`` gathers it (one extra
all-gather of the feed-forward activation per layer, the price of keeping the published weight layout).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError
from .base import transformer_layers

FSDP_AXIS = "fsdp"  # SPMD mesh axis parameters and batches are sharded over
MODEL_AXIS = "model"  # SPMD mesh axis of tensor parallelism

COLUMN_PARALLEL = ("attention.query", "attention.key", "attention.value", "ffn.up")
ROW_PARALLEL = ("attention.output", "ffn.down")
TP_BACKENDS = ("fsdp", "xla_fsdp")


def check_mesh(tensor_parallel: int, backend: str, num_devices: int | None = None) -> None:
    """:class:`ConfigError` unless ``backend`` can split layers over ``tensor_parallel`` devices (of
    ``num_devices``, when given)."""
    if tensor_parallel < 1:
        raise ConfigError(f"tensor_parallel must be >= 1, got {tensor_parallel}")
    if tensor_parallel == 1:
        return
    if backend not in TP_BACKENDS:
        raise ConfigError(f"tensor_parallel={tensor_parallel} needs parallel=fsdp or xla_fsdp, not parallel={backend}")
    if num_devices is not None and num_devices % tensor_parallel:
        raise ConfigError(
            f"tensor_parallel={tensor_parallel} does not divide the {num_devices} device(s) of parallel={backend}"
        )


def check_model(config: Any, tensor_parallel: int) -> None:
    """:class:`ConfigError` unless the attention heads and the feed-forward size split evenly."""
    if tensor_parallel == 1:
        return
    for field in ("num_attention_heads", "intermediate_size"):
        value = getattr(config, field)
        if value % tensor_parallel:
            raise ConfigError(f"tensor_parallel={tensor_parallel} does not divide the model's {field}={value}")


def xla_partition_spec(name: str, ndim: int) -> tuple[str | None, ...] | None:
    """The SPMD partition spec (one mesh axis or None per dimension) of parameter ``name`` under tensor
    parallelism, or None for FSDPv2's own (largest dimension over ``"fsdp"``). Linear weights are
    (out_features, in_features); embedding tables (vocabulary, hidden)."""
    module, _, kind = name.rpartition(".")
    if module.endswith(COLUMN_PARALLEL):
        return (MODEL_AXIS, FSDP_AXIS) if kind == "weight" else (MODEL_AXIS,)
    if module.endswith(ROW_PARALLEL):
        return (FSDP_AXIS, MODEL_AXIS) if kind == "weight" else (FSDP_AXIS,)
    if module.endswith(("word_embeddings", "position_embeddings")) and ndim == 2:
        return (FSDP_AXIS, MODEL_AXIS)  # hidden over "model": each device adds its slice of every token
    if module.endswith("lm_head.decoder") and ndim == 2:
        return (MODEL_AXIS, FSDP_AXIS)  # vocabulary over "model"
    if name.endswith("lm_head.bias"):
        return (MODEL_AXIS,)
    return None


def apply_tensor_parallel(model: nn.Module, tp_mesh: Any) -> None:
    """Split each transformer layer of ``model`` over the 1-D ``tp_mesh`` (``ColwiseParallel`` /
    ``RowwiseParallel``), in place; works on the meta device too."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    for layer in transformer_layers(model):
        plan = {name: ColwiseParallel() for name in COLUMN_PARALLEL}
        plan.update({name: RowwiseParallel() for name in ROW_PARALLEL})
        if getattr(layer.ffn, "gated", False):
            plan["ffn.up"] = ColwiseParallel(use_local_output=False)  # SwiGLU's chunk needs the global view
        parallelize_module(layer, tp_mesh, plan)
