"""genolm: genomic language models for plant genomes on the Hugging Face stack.

Importing genolm registers its configuration and model classes with transformers' ``Auto*`` factories, so
``AutoModelForMaskedLM.from_pretrained(checkpoint)`` works for genolm checkpoints without
``trust_remote_code``.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from .configuration_genolm import PRESETS, GenoLMConfig
from .finetune.adapters import register_peft_defaults
from .modeling_genolm import (
    GenoLMForMaskedLM,
    GenoLMForSequenceClassification,
    GenoLMForTokenClassification,
    GenoLMModel,
    GenoLMPreTrainedModel,
)
from .tokenization_genolm import GenoLMTokenizer

__version__ = "0.1.0"

AutoConfig.register("genolm", GenoLMConfig, exist_ok=True)
AutoModel.register(GenoLMConfig, GenoLMModel, exist_ok=True)
AutoModelForMaskedLM.register(GenoLMConfig, GenoLMForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(GenoLMConfig, GenoLMForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(GenoLMConfig, GenoLMForTokenClassification, exist_ok=True)
# Resolves "tokenizer_class": "GenoLMTokenizer" in saved folders. Without genolm, AutoTokenizer falls back to
# PreTrainedTokenizerFast on the same tokenizer.json, with identical ids.
AutoTokenizer.register(GenoLMConfig, tokenizer_class=GenoLMTokenizer, exist_ok=True)
register_peft_defaults()  # peft's default adapter targets for model type "genolm" (when peft is installed)

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
]
