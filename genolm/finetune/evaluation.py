"""Prediction over an encoded split, pooling of windows back to records (or nucleotides), and scoring.

The flow is ``predict`` (model outputs per window) -> ``pool_records`` (one row per record, or per nucleotide
for token classification) -> ``score`` (metrics and a predictions table). Predictions tables hold everything
the metrics are computed from, so they can be re-scored independently:

- classification: ``id, label, pred, prob_0 .. prob_{C-1}, label_name, pred_name``
- regression: ``id, label, pred`` (one output) or ``id, label_0.., pred_0..``
- multilabel: ``id, label_0 .., prob_0 ..``
- token_classification: ``id, position`` (0-based in the record) ``, label`` (-100 = none) ``, pred, prob_0 .., label_name, pred_name``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .data import IGNORE_INDEX, EncodedSplit, LabelSpec
from .metrics import (
    classification_metrics,
    confusion_matrix,
    f1_per_class,
    multilabel_metrics,
    regression_metrics,
)


@dataclass
class WindowOutputs:
    """Raw model outputs of a split: ``logits`` (n_windows, C) for sequence tasks, or one (tokens, k|1, C)
    array per window for token classification, in window order; ``loss`` is the mean eval loss."""

    logits: Any
    loss: float


@torch.no_grad()
def predict(
    model: torch.nn.Module, loader: Any, split: EncodedSplit, task: str, runtime: Any = None
) -> WindowOutputs:
    """Run ``model`` over ``loader`` (batches from an ``EncodedDataset(with_window=True)``).

    With a ``genolm.parallel.Runtime`` the outputs of all processes are gathered (without the samples
    repeated to even out the last batch), so every process returns the full split.
    """
    was_training = model.training
    model.eval()
    token_task = task == "token_classification"
    n_windows = len(split)
    seq_logits: np.ndarray | None = None
    tok_logits: list[Any] = [None] * n_windows
    loss_sum, loss_count = 0.0, 0
    for batch in loader:
        window = batch.pop("window")
        out = model(**batch)
        logits = out.logits.float()
        if token_task and logits.dim() == 3:  # one prediction per token -> (batch, tokens, 1, C)
            logits = logits.unsqueeze(2)
        loss = out.loss.detach().float() * window.numel()
        count = torch.tensor(float(window.numel()), device=loss.device)
        if runtime is not None:
            logits, window = runtime.gather_for_metrics(logits, window, pad_dim=1 if token_task else None)
            loss, count = runtime.reduce_sum(loss), runtime.reduce_sum(count)  # host sync below
        loss_sum += float(loss)
        loss_count += int(count)
        logits, window = logits.cpu().numpy(), window.cpu().numpy()
        if token_task:
            for row, w in enumerate(window):
                tok_logits[w] = logits[row, : len(split.input_ids[w])]
        else:
            if seq_logits is None:
                seq_logits = np.zeros((n_windows, logits.shape[-1]), dtype=np.float32)
            seq_logits[window] = logits
    model.train(was_training)
    return WindowOutputs(logits=tok_logits if token_task else seq_logits, loss=loss_sum / max(loss_count, 1))


def pool_windows(logits: np.ndarray, record: np.ndarray, n_records: int, method: str = "mean") -> np.ndarray:
    """Combine window logits (n_windows, C) into record logits (n_records, C) by ``mean`` or ``max``."""
    if method == "mean":
        sums = np.zeros((n_records, logits.shape[1]), dtype=np.float64)
        np.add.at(sums, record, logits)
        return (sums / np.bincount(record, minlength=n_records)[:, None]).astype(np.float32)
    if method == "max":
        out = np.full((n_records, logits.shape[1]), -np.inf, dtype=np.float32)
        np.maximum.at(out, record, logits)
        return out
    raise ValueError(f"window pooling must be 'mean' or 'max', got {method!r}")


def stitch_nucleotides(
    logits: list[np.ndarray], positions: list[np.ndarray], record: np.ndarray, record_lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-nucleotide logits of all records, concatenated, averaging the windows that cover a base.

    Args:
        logits: per window (tokens, k or 1, C); a single prediction per token is shared by its bases.
        positions: per window (tokens, k) record coordinate of each base, -1 for none.
        record: (n_windows,) record index per window.
        record_lengths: (n_records,) nt.

    Returns:
        ``(sum(record_lengths), C)`` mean logits and a boolean coverage mask of the same length.
    """
    offsets = np.concatenate(([0], np.cumsum(record_lengths)))
    total = int(offsets[-1])
    num_classes = logits[0].shape[-1]
    index_parts, value_parts = [], []
    for w, (window_logits, pos) in enumerate(zip(logits, positions)):
        window_logits = np.broadcast_to(window_logits, (*pos.shape, num_classes))
        valid = pos >= 0
        index_parts.append(offsets[record[w]] + pos[valid])
        value_parts.append(window_logits[valid])
    index = np.concatenate(index_parts)
    values = np.concatenate(value_parts).astype(np.float64)
    counts = np.bincount(index, minlength=total)
    sums = np.stack(
        [np.bincount(index, weights=values[:, c], minlength=total) for c in range(num_classes)], 1
    )
    covered = counts > 0
    mean = np.zeros_like(sums)
    mean[covered] = sums[covered] / counts[covered, None]
    return mean.astype(np.float32), covered


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def score(
    split: EncodedSplit, spec: LabelSpec, outputs: WindowOutputs, window_pooling: str = "mean"
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics and the predictions table of a split (see the module docstring for the columns)."""
    task = spec.task
    if task == "token_classification":
        logits, covered = stitch_nucleotides(
            outputs.logits, split.positions, split.record, split.record_lengths
        )
        labels = np.concatenate(split.record_labels)
        ids = np.repeat(np.asarray(split.record_ids, dtype=object), split.record_lengths)
        position = np.concatenate([np.arange(n) for n in split.record_lengths])
        prob = _softmax(logits[covered].astype(np.float64))
        table = pd.DataFrame({"id": ids[covered], "position": position[covered], "label": labels[covered]})
        table["pred"] = prob.argmax(1)
        for c in range(prob.shape[1]):
            table[f"prob_{c}"] = prob[:, c]
        scored = table["label"].to_numpy() != IGNORE_INDEX
        metrics = classification_metrics(table["label"].to_numpy()[scored], prob[scored])
        metrics["n"] = int(scored.sum())
        metrics["n_uncovered"] = int((~covered & (labels != IGNORE_INDEX)).sum())
    else:
        logits = pool_windows(outputs.logits, split.record, split.n_records, window_pooling).astype(
            np.float64
        )
        labels = split.record_labels
        table = pd.DataFrame({"id": split.record_ids})
        if task == "classification":
            prob = _softmax(logits)
            table["label"] = labels
            table["pred"] = prob.argmax(1)
            for c in range(prob.shape[1]):
                table[f"prob_{c}"] = prob[:, c]
            metrics = classification_metrics(labels, prob)
        elif task == "regression":
            if spec.num_labels == 1:
                table["label"], table["pred"] = labels[:, 0], logits[:, 0]
            else:
                for j in range(spec.num_labels):
                    table[f"label_{j}"] = labels[:, j]
                for j in range(spec.num_labels):
                    table[f"pred_{j}"] = logits[:, j]
            metrics = regression_metrics(labels, logits)
        else:
            prob = _sigmoid(logits)
            for j in range(spec.num_labels):
                table[f"label_{j}"] = labels[:, j].astype(np.int64)
            for j in range(spec.num_labels):
                table[f"prob_{j}"] = prob[:, j]
            metrics = multilabel_metrics(labels, prob)
        metrics["n"] = split.n_records
    if task in ("classification", "token_classification"):
        _name_classes(metrics, table, spec.names)
    metrics["loss"] = outputs.loss
    return metrics, table


def _name_classes(metrics: dict[str, Any], table: pd.DataFrame, names: list[str]) -> None:
    """Add the class names: ``label_name``/``pred_name`` columns and per-class F1 and support keyed by name."""
    lookup = np.asarray([*names, "none"], dtype=object)  # index -1 (= IGNORE_INDEX rows): no label
    label = table["label"].to_numpy()
    table["label_name"] = lookup[np.where(label == IGNORE_INDEX, -1, label)]
    table["pred_name"] = lookup[table["pred"].to_numpy()]
    scored = label != IGNORE_INDEX
    confusion = confusion_matrix(label[scored], table["pred"].to_numpy()[scored], len(names))
    metrics["f1_per_class"] = dict(zip(names, map(float, f1_per_class(confusion)), strict=True))
    metrics["support"] = dict(zip(names, map(int, confusion.sum(1)), strict=True))


__all__ = ["WindowOutputs", "pool_windows", "predict", "score", "stitch_nucleotides"]
