"""Fine-tuning genolm models on labelled sequences: the library behind ``recipes/finetune.py``.

- :mod:`.config`: :class:`FinetuneConfig`, the recipe's settings (YAML + command line).
- :mod:`.data`: reading tables / FASTA + label tables, label encoding, long-record handling, batching.
- :mod:`.modeling`: checkpoint resolution (genolm, ESM / NT / AgroNT, presets), tokenizer and task model.
- :mod:`.adapters`: LoRA and IA3 through ``peft``, with genolm default target modules, and merging.
- :mod:`.evaluation`: prediction, pooling of windows, scoring and predictions tables.
- :mod:`.metrics`: the metrics, in numpy (definitions of scikit-learn / scipy).
"""

from .adapters import (
    DEFAULT_FEEDFORWARD_MODULES,
    DEFAULT_TARGET_MODULES,
    apply_peft,
    count_parameters,
    merge_adapters,
    peft_config,
)
from .config import TASKS, FinetuneConfig, default_metric
from .data import (
    IGNORE_INDEX,
    Collator,
    EncodedDataset,
    EncodedSplit,
    LabelSpec,
    Records,
    encode_split,
    load_records,
    read_table,
    split_validation,
    task_class_names,
    window_starts,
)
from .evaluation import WindowOutputs, pool_windows, predict, score, stitch_nucleotides
from .metrics import classification_metrics, multilabel_metrics, regression_metrics
from .modeling import build_model, load_base_config, load_tokenizer, resolve_checkpoint

__all__ = [
    "DEFAULT_FEEDFORWARD_MODULES",
    "DEFAULT_TARGET_MODULES",
    "IGNORE_INDEX",
    "TASKS",
    "Collator",
    "EncodedDataset",
    "EncodedSplit",
    "FinetuneConfig",
    "LabelSpec",
    "Records",
    "WindowOutputs",
    "apply_peft",
    "build_model",
    "classification_metrics",
    "count_parameters",
    "default_metric",
    "encode_split",
    "load_base_config",
    "load_records",
    "load_tokenizer",
    "merge_adapters",
    "multilabel_metrics",
    "peft_config",
    "pool_windows",
    "predict",
    "read_table",
    "regression_metrics",
    "resolve_checkpoint",
    "score",
    "split_validation",
    "task_class_names",
    "stitch_nucleotides",
    "window_starts",
]
