"""Training and validation windows for pretraining, from ``genolm.data.genome_dataset``."""

from __future__ import annotations

import itertools
from typing import Any

from .config import PretrainConfig


def default_sources() -> list[str]:
    """The genome bundled with genolm (the *A. thaliana* chloroplast)."""
    from genolm.examples import chloroplast_path

    return [str(chloroplast_path())]


def build_datasets(config: PretrainConfig, tokenizer: Any) -> tuple[Any, Any]:
    """The training stream and the held-out validation stream of tokenized windows.

    Both come from ``genome_dataset`` with ``config.data_options``; the validation split is the stable
    block-level hold-out of ``genome_dataset`` (``validation_fraction``), so no validation window overlaps
    a training one. Validation windows are read in order, on the forward strand. Soft-mask fractions are
    requested when ``soft_mask_weight < 1``.

    Rows: ``input_ids``/``attention_mask`` of ``config.max_tokens + 1`` ids (``<cls>`` first, padded),
    ``species``, ``seq_id``, ``start``, ``end``, ``strand`` (and ``softmask``).
    """
    from genolm.data import genome_dataset

    sources = config.sources or default_sources()
    options = dict(config.data_options)
    options.setdefault("seed", config.seed)
    if config.soft_mask_weight < 1.0:
        options["softmask"] = True
    train = genome_dataset(sources, tokenizer, max_tokens=config.max_tokens, stride=config.stride, split="train", **options)
    validation_options = {**options, "shuffle": False, "reverse_complement": 0.0}
    validation = genome_dataset(
        sources, tokenizer, max_tokens=config.max_tokens, stride=None, split="validation", **validation_options
    )
    return train, validation


def take(dataset: Any, n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of an iterable dataset."""
    return list(itertools.islice(iter(dataset), n))


__all__ = ["build_datasets", "default_sources", "take"]
