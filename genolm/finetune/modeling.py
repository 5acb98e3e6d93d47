"""Building the model and tokenizer of a fine-tuning run from a checkpoint, a Hub id, or a preset."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..configuration_genolm import GenoLMConfig
from ..errors import InputDataError
from ..hub import local_model_folder
from ..modeling_genolm import (
    GenoLMForSequenceClassification,
    GenoLMForTokenClassification,
    GenoLMPreTrainedModel,
)
from ..tokenization_genolm import GenoLMTokenizer, fit_model_max_length
from .data import LabelSpec

logger = logging.getLogger(__name__)

PRESET_PREFIX = "preset:"
PROBLEM_TYPES = {
    "classification": "single_label_classification",
    "regression": "regression",
    "multilabel": "multi_label_classification",
}


def resolve_checkpoint(model: str, work_dir: str | Path) -> Path | None:
    """Local folder of ``model`` in genolm format, or ``None`` for ``preset:NAME``.

    A Hub id is downloaded (``huggingface_hub.snapshot_download``); an ESM-format checkpoint (the published NT
    and AgroNT weights) is converted with :func:`genolm.convert.esm_to_genolm` into ``work_dir/base_model``.
    """
    if model.startswith(PRESET_PREFIX):
        return None
    path = local_model_folder(model)
    config_file = path / "config.json"
    if not config_file.exists():
        raise InputDataError(f"{path}: no config.json (is this a Hugging Face checkpoint folder?)")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type == "esm":
        from ..convert import esm_to_genolm

        converted = Path(work_dir) / "base_model"
        logger.info("converting ESM-format checkpoint %s to genolm in %s", path, converted)
        esm_to_genolm(path, converted)
        return converted
    if model_type != "genolm":
        raise InputDataError(f"{config_file}: model_type {model_type!r}; expected 'genolm' or 'esm'")
    return path


def load_base_config(checkpoint: Path | None, model: str) -> GenoLMConfig:
    """Configuration of the checkpoint, or of the preset named by ``model`` (``preset:NAME``)."""
    if checkpoint is None:
        return GenoLMConfig.from_preset(model[len(PRESET_PREFIX) :])
    return GenoLMConfig.from_pretrained(checkpoint)


def load_tokenizer(tokenizer: str | None, checkpoint: Path | None, config: GenoLMConfig) -> GenoLMTokenizer:
    """The named tokenizer, else the checkpoint's own, else a new one matching ``config`` (layout and k)."""
    source = tokenizer or (str(checkpoint) if checkpoint is not None else None)
    if source is not None and (tokenizer is not None or (Path(source) / "tokenizer_config.json").exists()):
        loaded = GenoLMTokenizer.from_pretrained(source)
    else:
        loaded = GenoLMTokenizer(vocab_layout=config.vocab_layout, k=config.k)
    if loaded.k != config.k or loaded.vocab_layout != config.vocab_layout:
        raise ValueError(
            f"tokenizer ({loaded.vocab_layout}, k={loaded.k}) does not match the model "
            f"({config.vocab_layout}, k={config.k})"
        )
    return fit_model_max_length(loaded, config.max_tokens)


def head_overrides(task: str, spec: LabelSpec, **options: Any) -> dict[str, Any]:
    """Config fields that define the task head: labels, problem type and the options that are not ``None``."""
    overrides: dict[str, Any] = {"num_labels": spec.num_labels}
    if task in PROBLEM_TYPES:
        overrides["problem_type"] = PROBLEM_TYPES[task]
    if task in ("classification", "token_classification"):
        overrides["id2label"] = dict(enumerate(spec.names))
        overrides["label2id"] = {name: i for i, name in enumerate(spec.names)}
    overrides.update({key: value for key, value in options.items() if value is not None})
    return overrides


def build_model(
    task: str,
    spec: LabelSpec,
    checkpoint: Path | None,
    model: str,
    pooling: str | None = None,
    per_nucleotide: bool = True,
    classifier_dropout: float | None = None,
) -> GenoLMPreTrainedModel:
    """The task model: encoder weights from ``checkpoint`` (any genolm head) with a new task head, or all
    weights random for a preset. Head settings are stored in the config, so the saved model keeps them."""
    model_class = (
        GenoLMForTokenClassification if task == "token_classification" else GenoLMForSequenceClassification
    )
    overrides = head_overrides(
        task,
        spec,
        pooling=pooling,
        classifier_dropout=classifier_dropout,
        per_nucleotide=per_nucleotide if task == "token_classification" else None,
    )
    if checkpoint is None:
        config = GenoLMConfig.from_preset(model[len(PRESET_PREFIX) :], **overrides)
        return model_class(config)
    return load_with_new_head(model_class, checkpoint, **overrides)


def load_with_new_head(model_class: type[GenoLMPreTrainedModel], checkpoint: Path, **overrides: Any):
    """``model_class.from_pretrained(checkpoint)`` for a task head the checkpoint lacks.

    transformers' coloured load-report table is replaced by one log line: the new head's weights (expected)
    at INFO, encoder weights missing from the checkpoint or of another shape (a wrong checkpoint) as a warning.
    """
    from transformers.utils import logging as transformers_logging

    previous = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(
            checkpoint, ignore_mismatched_sizes=True, output_loading_info=True, **overrides
        )
    finally:
        transformers_logging.set_verbosity(previous)
    head = ("classifier.", "score.")
    missing = sorted(info.get("missing_keys") or [])
    encoder_missing = [key for key in missing if not key.startswith(head)]
    mismatched = [str(item[0] if isinstance(item, (tuple, list)) else item) for item in info.get("mismatched_keys") or []]
    unused = sorted(info.get("unexpected_keys") or [])
    logger.info(
        "%s from %s: new head %s; %d checkpoint tensors not used (%s)",
        model_class.__name__, checkpoint, ", ".join(k for k in missing if k.startswith(head)) or "none",
        len(unused), ", ".join(unused[:3]) + (", ..." if len(unused) > 3 else ""),
    )
    if encoder_missing or mismatched:
        logger.warning(
            "%s: %s missing from the checkpoint%s (randomly initialised); is this the right checkpoint?",
            checkpoint, ", ".join(encoder_missing[:5]) or "no tensor",
            f"; other shapes: {', '.join(mismatched[:5])}" if mismatched else "",
        )
    return model


__all__ = [
    "PRESET_PREFIX",
    "build_model",
    "head_overrides",
    "load_base_config",
    "load_tokenizer",
    "load_with_new_head",
    "resolve_checkpoint",
]
