"""Parameter-efficient fine-tuning of genolm models with the ``peft`` library (LoRA, IA3).

genolm layer modules are named ``genolm.encoder.layers.N.attention.{query,key,value,output}`` and
``genolm.encoder.layers.N.ffn.{up,down}`` (the task head is ``classifier``). Defaults:

- LoRA: every linear layer of the encoder (attention query, key, value, output and both feed-forward
  projections), rank 8.
- IA3 (what AgroNT used): learned rescaling of attention keys and values and of the feed-forward inner
  activation. The last one is IA3's ``l_ff``, which peft applies to the *input* of a feed-forward module, so
  the feed-forward target is ``ffn.down`` (its input is the activation after GELU / SwiGLU); ``feedforward_modules``
  must be a subset of ``target_modules``.

The same defaults are registered with peft for model type ``genolm``
(:func:`genolm.peft_defaults.register_peft_defaults`, run once transformers is loaded after ``import genolm``),
so a bare ``LoraConfig(task_type="SEQ_CLS")`` or ``IA3Config()`` needs no module names.

The task head is trained in full (peft's ``modules_to_save``). :func:`merge_adapters` folds the adapters into
the weights and checks that outputs did not change, so the result saves as a plain genolm checkpoint.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from ..peft_defaults import DEFAULT_FEEDFORWARD_MODULES, DEFAULT_TARGET_MODULES, register_peft_defaults

logger = logging.getLogger(__name__)

# The task head, trained in full. The sequence head is listed by its linear layers: peft's merge-and-unload
# replaces a saved module by one with a ``weight``, which a composite head lacks. For the same reason the
# adapters are made without a peft ``task_type`` (SEQ_CLS would add the whole ``classifier`` module).
HEAD_MODULES = {
    "classification": ["classifier.dense", "classifier.out_proj"],
    "regression": ["classifier.dense", "classifier.out_proj"],
    "multilabel": ["classifier.dense", "classifier.out_proj"],
    "token_classification": ["classifier"],
}
# Largest output change accepted when merging adapters into the weights (fp32 rounding only).
MERGE_TOLERANCE = 1e-4


def peft_config(
    method: str,
    task: str,
    target_modules: list[str] | None = None,
    feedforward_modules: list[str] | None = None,
    lora_r: int = 8,
    lora_alpha: float = 16.0,
    lora_dropout: float = 0.05,
) -> Any:
    """A ``peft.LoraConfig`` or ``peft.IA3Config`` for a genolm task model (head in ``modules_to_save``).

    Load a saved adapter with ``peft.PeftModel.from_pretrained(task_model, adapter_dir)``.

    ``target_modules`` are module-name suffixes (peft's list semantics), or a single regular expression
    matched against full module names.
    """
    from peft import IA3Config, LoraConfig

    if method not in DEFAULT_TARGET_MODULES:
        raise ValueError(f"peft method must be one of {list(DEFAULT_TARGET_MODULES)}, got {method!r}")
    targets: Any = list(target_modules or DEFAULT_TARGET_MODULES[method])
    if len(targets) == 1 and any(c in targets[0] for c in "\\^$*+?[("):
        targets = targets[0]  # one regular expression
    common = dict(target_modules=targets, modules_to_save=list(HEAD_MODULES[task]))
    if method == "lora":
        return LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, **common)
    feedforward = list(
        feedforward_modules if feedforward_modules is not None else DEFAULT_FEEDFORWARD_MODULES
    )
    if isinstance(targets, list):
        missing = set(feedforward) - set(targets)
        if missing:
            raise ValueError(f"IA3 feedforward_modules {sorted(missing)} are not in target_modules {targets}")
    return IA3Config(feedforward_modules=feedforward, **common)


def apply_peft(model: torch.nn.Module, config: Any) -> Any:
    """Wrap ``model`` with adapters; only adapter and head parameters stay trainable."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        # PEFT asks transformers' deprecated alias `is_gradient_checkpointing` (a FutureWarning on every run)
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        peft_model = get_peft_model(model, config)
    trainable, total = count_parameters(peft_model)
    logger.info(
        "%s: %d trainable of %d parameters (%.3f%%)",
        type(config).__name__,
        trainable,
        total,
        100 * trainable / total,
    )
    return peft_model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared tensors are counted once."""
    seen: dict[int, torch.nn.Parameter] = {}
    for parameter in model.parameters():
        seen[id(parameter)] = parameter
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, sum(p.numel() for p in seen.values())


@torch.no_grad()
def merge_adapters(
    peft_model: Any, batch: dict[str, torch.Tensor] | None = None, atol: float = MERGE_TOLERANCE
) -> Any:
    """Fold the adapters into the base weights and return the plain model (the head keeps its trained copy).

    With ``batch`` (``input_ids``, ``attention_mask``), the logits before and after merging are compared and
    a ``RuntimeError`` is raised if they differ by more than ``atol``; the merge is in place either way.
    """
    was_training = peft_model.training
    peft_model.eval()
    before = None
    if batch is not None:
        before = peft_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits.float()
    merged = peft_model.merge_and_unload()
    merged.eval()
    if before is not None:
        after = merged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        difference = float((after - before).abs().max())
        if difference > atol:
            raise RuntimeError(
                f"merged model's logits differ from the adapter model's by {difference:.3g} > {atol}"
            )
        logger.info("merged adapters; largest logit change %.3g", difference)
    merged.train(was_training)
    return merged


__all__ = [
    "DEFAULT_FEEDFORWARD_MODULES",
    "DEFAULT_TARGET_MODULES",
    "HEAD_MODULES",
    "apply_peft",
    "count_parameters",
    "merge_adapters",
    "peft_config",
    "register_peft_defaults",
]
