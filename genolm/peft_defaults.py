"""genolm's default adapter targets, registered with ``peft`` for model type ``genolm``.

A module of its own, importing nothing heavy: the registration runs whenever transformers is loaded after
``import genolm``, and must not pull in the fine-tuning package. :mod:`genolm.finetune.adapters` builds its
adapter configurations from the same lists.
"""

from __future__ import annotations

DEFAULT_TARGET_MODULES = {
    "lora": ["query", "key", "value", "output", "up", "down"],
    "ia3": ["key", "value", "down"],
}
DEFAULT_FEEDFORWARD_MODULES = ["down"]


def register_peft_defaults() -> bool:
    """Register genolm's default target modules with ``peft`` for model type ``genolm``, so that
    ``get_peft_model(model, LoraConfig(task_type="SEQ_CLS"))`` works without ``target_modules``: LoRA on
    query, key, value and the dense layers (attention output, both feed-forward projections); IA3 on key,
    value and ``ffn.down`` (its feed-forward module, as AgroNT used it).

    Uses peft's public model-type mappings; called when genolm registers with transformers' ``Auto*``
    classes. Returns False when peft is not installed.
    """
    try:
        from peft.utils import constants
    except ImportError:
        return False
    constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.setdefault("genolm", DEFAULT_TARGET_MODULES["lora"])
    constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING.setdefault("genolm", DEFAULT_TARGET_MODULES["ia3"])
    constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.setdefault("genolm", DEFAULT_FEEDFORWARD_MODULES)
    return True


__all__ = ["DEFAULT_FEEDFORWARD_MODULES", "DEFAULT_TARGET_MODULES", "register_peft_defaults"]
