"""Evaluation metrics of the fine-tuning tasks, in numpy.

Definitions follow scikit-learn and scipy (the tests recompute every metric with them from the saved
predictions): F1 and MCC as ``sklearn.metrics.f1_score`` / ``matthews_corrcoef``; AUROC as the
Mann-Whitney statistic with average ranks for ties (equal to the trapezoidal ROC area of ``roc_auc_score``);
AUPRC as ``average_precision_score`` (step-wise precision-recall sum, not trapezoidal); R² as ``r2_score``
(uniform average over outputs); Pearson and Spearman as ``scipy.stats.pearsonr`` / ``spearmanr``.

Undefined values (an AUROC with one class present, a correlation of a constant) are ``nan``; macro averages
leave such labels out and say how many in ``n_labels_undefined``.
"""

from __future__ import annotations

import math

import numpy as np


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties sharing their average rank (``scipy.stats.rankdata`` 'average')."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # first index of each run of equal values, and the run each sorted element belongs to
    new_run = np.concatenate(([True], sorted_values[1:] != sorted_values[:-1]))
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.concatenate((run_start[1:], [values.size]))
    average = (run_start + run_end + 1) / 2.0  # mean of the 1-based ranks run_start+1 .. run_end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = average[run_id]
    return ranks


def binary_auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of scores for 0/1 labels; ``nan`` if only one class is present."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos = int(y_true.sum())
    n_neg = y_true.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Average precision: sum over score thresholds of (recall step) x precision; ``nan`` without positives."""
    y_true = np.asarray(y_true).astype(np.float64)
    if y_true.sum() == 0:
        return math.nan
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="mergesort")
    score_sorted = np.asarray(score, dtype=np.float64)[order]
    y_sorted = y_true[order]
    # one threshold per distinct score: the last index of each run of equal scores
    last = np.concatenate((np.flatnonzero(np.diff(score_sorted)), [y_sorted.size - 1]))
    true_pos = np.cumsum(y_sorted)[last]
    predicted_pos = last + 1.0
    precision = true_pos / predicted_pos
    recall = true_pos / true_pos[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = true class, columns = predicted class."""
    index = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def matthews_corrcoef(confusion: np.ndarray) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K) from a confusion matrix; 0 when undefined."""
    c = confusion.astype(np.float64)
    n = c.sum()
    true_sum, pred_sum, correct = c.sum(1), c.sum(0), np.trace(c)
    cov_tp = correct * n - true_sum @ pred_sum
    cov_pp = n * n - pred_sum @ pred_sum
    cov_tt = n * n - true_sum @ true_sum
    if cov_pp == 0 or cov_tt == 0:
        return 0.0
    return float(cov_tp / math.sqrt(cov_tt * cov_pp))


def f1_per_class(confusion: np.ndarray) -> np.ndarray:
    """F1 of each class (0 where the class is neither true nor predicted)."""
    c = confusion.astype(np.float64)
    tp = np.diag(c)
    denominator = c.sum(0) + c.sum(1)
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def classification_metrics(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Metrics of single-label classification.

    Args:
        y_true: (n,) class ids.
        prob: (n, num_classes) class probabilities; the prediction is their argmax.

    Returns:
        ``accuracy``; ``f1`` (of class 1 when there are two classes, else macro); ``f1_macro`` (over the
        classes that are true or predicted at least once, as scikit-learn); ``mcc``; ``auroc`` (of class 1's
        probability for two classes, else one-vs-rest macro over classes with both outcomes present).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    num_classes = prob.shape[1]
    y_pred = prob.argmax(1)
    confusion = confusion_matrix(y_true, y_pred, num_classes)
    f1 = f1_per_class(confusion)
    present = (confusion.sum(0) + confusion.sum(1)) > 0
    metrics = {
        "accuracy": float((y_pred == y_true).mean()),
        "f1_macro": float(f1[present].mean()),
        "mcc": matthews_corrcoef(confusion),
    }
    if num_classes == 2:
        metrics["f1"] = float(f1[1])
        metrics["auroc"] = binary_auroc(y_true == 1, prob[:, 1])
        metrics["auprc"] = average_precision(y_true == 1, prob[:, 1])
    else:
        metrics["f1"] = metrics["f1_macro"]
        per_class = [binary_auroc(y_true == c, prob[:, c]) for c in range(num_classes)]
        metrics["auroc"] = _nanmean(per_class)
    return metrics


def multilabel_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Metrics of multi-label classification.

    Args:
        y_true: (n, num_labels) 0/1.
        prob: (n, num_labels) probabilities.

    Returns:
        ``auroc_macro`` / ``auprc_macro`` (mean over labels with both outcomes present), ``auroc_micro`` /
        ``auprc_micro`` (all label-record pairs pooled), ``f1_macro`` / ``f1_micro`` at ``threshold``,
        ``subset_accuracy``, and ``n_labels_undefined`` (labels left out of the macro means).
    """
    y_true = np.asarray(y_true).astype(np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    y_pred = (prob >= threshold).astype(np.int64)
    num_labels = y_true.shape[1]
    aurocs = [binary_auroc(y_true[:, j], prob[:, j]) for j in range(num_labels)]
    auprcs = [average_precision(y_true[:, j], prob[:, j]) for j in range(num_labels)]
    tp = (y_pred * y_true).sum(0).astype(np.float64)
    denominator = (y_pred.sum(0) + y_true.sum(0)).astype(np.float64)
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return {
        "auroc_macro": _nanmean(aurocs),
        "auroc_micro": binary_auroc(y_true.ravel(), prob.ravel()),
        "auprc_macro": _nanmean(auprcs),
        "auprc_micro": average_precision(y_true.ravel(), prob.ravel()),
        "f1_macro": float(f1.mean()),
        "f1_micro": float(2 * tp.sum() / denominator.sum()) if denominator.sum() > 0 else 0.0,
        "subset_accuracy": float((y_pred == y_true).all(1).mean()),
        "n_labels_undefined": int(sum(math.isnan(a) for a in aurocs)),
    }


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; ``nan`` if either side is constant."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / denominator) if denominator > 0 else math.nan


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Metrics of (multi-output) regression.

    Args:
        y_true, y_pred: (n,) or (n, num_outputs).

    Returns:
        ``r2`` (mean over outputs of 1 - SS_res / SS_tot), ``pearson`` and ``spearman`` (mean over outputs),
        ``mse``, and for several outputs the per-output values as lists under ``per_output``.
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    r2, pearsons, spearmans = [], [], []
    for j in range(y_true.shape[1]):
        t, p = y_true[:, j], y_pred[:, j]
        ss_res = float(((t - p) ** 2).sum())
        ss_tot = float(((t - t.mean()) ** 2).sum())
        r2.append(1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0))
        pearsons.append(pearson(t, p))
        spearmans.append(pearson(rankdata(t), rankdata(p)))
    metrics: dict = {
        "r2": float(np.mean(r2)),
        "pearson": float(np.mean(pearsons)),
        "spearman": float(np.mean(spearmans)),
        "mse": float(((y_true - y_pred) ** 2).mean()),
    }
    if y_true.shape[1] > 1:
        metrics["per_output"] = {"r2": r2, "pearson": pearsons, "spearman": spearmans}
    return metrics


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def json_safe(value):
    """Replace ``nan``/``inf`` (not valid JSON) by ``None``, recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = [
    "average_precision",
    "binary_auroc",
    "classification_metrics",
    "confusion_matrix",
    "json_safe",
    "matthews_corrcoef",
    "multilabel_metrics",
    "pearson",
    "rankdata",
    "regression_metrics",
]
