"""The numpy metrics of genolm.finetune against scikit-learn and scipy on random data with ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from genolm.finetune.metrics import (
    average_precision,
    binary_auroc,
    classification_metrics,
    multilabel_metrics,
    rankdata,
    regression_metrics,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_auroc_average_precision_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    score = np.round(rng.random(200), 1)  # many ties
    np.testing.assert_allclose(rankdata(score), stats.rankdata(score))
    assert binary_auroc(y, score) == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert average_precision(y, score) == pytest.approx(skm.average_precision_score(y, score), abs=1e-12)
    assert math.isnan(binary_auroc(np.zeros(5), np.arange(5)))


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_classification_metrics(num_classes):
    rng = np.random.default_rng(num_classes)
    y = rng.integers(0, num_classes, 300)
    logits = rng.normal(size=(300, num_classes)) + 1.5 * np.eye(num_classes)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = prob.argmax(1)
    got = classification_metrics(y, prob)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    if num_classes == 2:
        assert got["f1"] == pytest.approx(skm.f1_score(y, pred))
        assert got["auroc"] == pytest.approx(skm.roc_auc_score(y, prob[:, 1]))
        assert got["auprc"] == pytest.approx(skm.average_precision_score(y, prob[:, 1]))
    else:
        assert got["auroc"] == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr", average="macro"))


def test_classification_metrics_constant_prediction():
    y = np.array([0, 1, 1, 0])
    prob = np.tile([0.9, 0.1], (4, 1))
    got = classification_metrics(y, prob)
    assert got["mcc"] == skm.matthews_corrcoef(y, prob.argmax(1)) == 0.0
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, prob.argmax(1), average="macro", zero_division=0))


def test_multilabel_metrics():
    rng = np.random.default_rng(0)
    y = (rng.random((150, 6)) < 0.2).astype(int)
    y[:, 5] = 0  # a label without positives: left out of the macro means
    prob = np.clip(0.5 * y + rng.random((150, 6)) * 0.6, 0, 1)
    got = multilabel_metrics(y, prob)
    ok = [j for j in range(6) if 0 < y[:, j].sum() < len(y)]
    assert got["n_labels_undefined"] == 1
    assert got["auroc_macro"] == pytest.approx(skm.roc_auc_score(y[:, ok], prob[:, ok], average="macro"))
    assert got["auroc_micro"] == pytest.approx(skm.roc_auc_score(y, prob, average="micro"))
    assert got["auprc_macro"] == pytest.approx(
        skm.average_precision_score(y[:, ok], prob[:, ok], average="macro")
    )
    assert got["auprc_micro"] == pytest.approx(skm.average_precision_score(y, prob, average="micro"))
    pred = (prob >= 0.5).astype(int)
    assert got["f1_micro"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert got["subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))


@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_metrics(outputs):
    rng = np.random.default_rng(outputs)
    y = rng.normal(size=(100, outputs))
    p = y + rng.normal(size=(100, outputs))
    p[:10] = np.round(p[:10])  # ties for Spearman
    got = regression_metrics(y, p)
    assert got["r2"] == pytest.approx(skm.r2_score(y, p))
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, p))
    assert got["pearson"] == pytest.approx(
        np.mean([stats.pearsonr(y[:, j], p[:, j])[0] for j in range(outputs)])
    )
    assert got["spearman"] == pytest.approx(
        np.mean([stats.spearmanr(y[:, j], p[:, j])[0] for j in range(outputs)])
    )
    assert ("per_output" in got) == (outputs > 1)
