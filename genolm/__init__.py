"""genolm: genomic language models for plant genomes on the Hugging Face stack.

Importing genolm registers its configuration and model classes with transformers' ``Auto*`` factories, so
``AutoModelForMaskedLM.from_pretrained(checkpoint)`` works for genolm checkpoints without
``trust_remote_code``.

``import genolm`` itself stays light (the command line starts without torch): the classes below are imported
on first use, and the ``Auto*`` registration happens as soon as transformers is imported, before or after
genolm.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it (imported on first access, PEP 562).
_LAZY_NAMES = {
    "PRESETS": "configuration_genolm",
    "GenoLMConfig": "configuration_genolm",
    "GenoLMForMaskedLM": "modeling_genolm",
    "GenoLMForSequenceClassification": "modeling_genolm",
    "GenoLMForTokenClassification": "modeling_genolm",
    "GenoLMModel": "modeling_genolm",
    "GenoLMPreTrainedModel": "modeling_genolm",
    "GenoLMTokenizer": "tokenization_genolm",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})


def register_auto_classes() -> None:
    """Register genolm's config, models and tokenizer with transformers' ``Auto*`` factories (idempotent)."""
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    from .configuration_genolm import GenoLMConfig
    from .modeling_genolm import (
        GenoLMForMaskedLM,
        GenoLMForSequenceClassification,
        GenoLMForTokenClassification,
        GenoLMModel,
    )
    from .peft_defaults import register_peft_defaults
    from .tokenization_genolm import GenoLMTokenizer

    AutoConfig.register("genolm", GenoLMConfig, exist_ok=True)
    AutoModel.register(GenoLMConfig, GenoLMModel, exist_ok=True)
    AutoModelForMaskedLM.register(GenoLMConfig, GenoLMForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(GenoLMConfig, GenoLMForSequenceClassification, exist_ok=True)
    AutoModelForTokenClassification.register(GenoLMConfig, GenoLMForTokenClassification, exist_ok=True)
    # Resolves "tokenizer_class": "GenoLMTokenizer" in saved folders. Without genolm, AutoTokenizer falls back
    # to PreTrainedTokenizerFast on the same tokenizer.json, with identical ids.
    AutoTokenizer.register(GenoLMConfig, tokenizer_class=GenoLMTokenizer, exist_ok=True)
    register_peft_defaults()  # peft's default adapter targets for model type "genolm" (when peft is installed)


# Modules that define the registered classes; each imports transformers.
_MODEL_MODULES = ("genolm.configuration_genolm", "genolm.modeling_genolm", "genolm.tokenization_genolm")


class _AutoRegistration(importlib.abc.MetaPathFinder):
    """Import hook that calls :func:`register_auto_classes` once transformers is loaded.

    Registering imports genolm's model modules, which import transformers, so it cannot run while one of them
    is half-executed (``from genolm import GenoLMConfig`` is what first imports transformers). The hook wraps
    the loaders of ``transformers`` and of those modules (found by the other finders), counts the model
    modules being executed, and registers when transformers is loaded and that count is zero. It then takes
    itself off ``sys.meta_path``, so every later import is untouched.
    """

    def __init__(self) -> None:
        self.transformers_loaded = False
        self.executing = 0  # model modules being executed right now
        self.finding = False

    def find_spec(self, fullname, path=None, target=None):
        if self.finding or (fullname != "transformers" and fullname not in _MODEL_MODULES):
            return None
        self.finding = True  # importlib.util.find_spec asks this finder again
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.finding = False
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module
        is_model_module = fullname != "transformers"

        def exec_then_register(module):
            self.executing += is_model_module
            try:
                exec_module(module)
            finally:
                self.executing -= is_model_module
            self.transformers_loaded |= not is_model_module
            if self.transformers_loaded and self.executing == 0 and self in sys.meta_path:
                sys.meta_path.remove(self)
                register_auto_classes()

        spec.loader.exec_module = exec_then_register  # this loader object belongs to this one spec
        return spec


if "transformers" in sys.modules:
    register_auto_classes()
elif not any(type(finder).__name__ == "_AutoRegistration" for finder in sys.meta_path):
    sys.meta_path.insert(0, _AutoRegistration())

__all__ = [
    "PRESETS",
    "GenoLMConfig",
    "GenoLMForMaskedLM",
    "GenoLMForSequenceClassification",
    "GenoLMForTokenClassification",
    "GenoLMModel",
    "GenoLMPreTrainedModel",
    "GenoLMTokenizer",
    "__version__",
    "register_auto_classes",
]
