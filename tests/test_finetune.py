"""recipes/finetune.py end to end on slices of the Plant Genomic Benchmark subsets: every task type trains a
tiny model for a few steps, and the metrics it reports are recomputed with scikit-learn / scipy from the
predictions it saved."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm

from genolm.errors import ConfigError
from genolm.recipe_config import load_yaml
from genolm.training.guards import TrainingDivergedError

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPE = REPO_ROOT / "recipes" / "finetune.py"
PGB = "pgb"


@pytest.fixture(scope="module")
def recipe():
    """recipes/finetune.py imported as a module (its ``main(argv)`` runs the recipe in this process)."""
    spec = importlib.util.spec_from_file_location("finetune_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(recipe, out, *args: str) -> dict:
    """A few optimizer steps with two validation passes; returns metrics.json."""
    fast = ["--max_steps", "6", "--eval_every", "3", "--log_every", "3", "--batch_size", "8"]
    fast += ["--max_length", "24", "--lr", "2e-3", "--mixed_precision", "no", "--output_dir", str(out)]
    returned = recipe.main(fast + list(args))
    written = json.loads((out / "metrics.json").read_text())
    assert written == json.loads(json.dumps(returned))
    return written


def _same(reported, expected):
    if reported is None:
        assert math.isnan(expected)
    else:
        assert reported == pytest.approx(expected, abs=1e-6)


def check_classification(out, metrics, split):
    table = pd.read_parquet(out / f"predictions_{split}.parquet")
    prob = table.filter(like="prob_").to_numpy()
    y, pred = table["label"].to_numpy(), table["pred"].to_numpy()
    np.testing.assert_array_equal(pred, prob.argmax(1))
    np.testing.assert_allclose(prob.sum(1), 1.0, rtol=1e-5)
    m = metrics[split]
    assert m["n"] == len(table)
    _same(m["accuracy"], skm.accuracy_score(y, pred))
    _same(m["mcc"], skm.matthews_corrcoef(y, pred))
    _same(m["f1_macro"], skm.f1_score(y, pred, average="macro"))
    if prob.shape[1] == 2:
        _same(m["f1"], skm.f1_score(y, pred, zero_division=0))
        _same(m["auroc"], skm.roc_auc_score(y, prob[:, 1]))
    else:
        present = np.unique(y)
        _same(m["auroc"], np.mean([skm.roc_auc_score(y == c, prob[:, c]) for c in present]))
    return table


def test_classification(recipe, shared_data, tmp_path):
    data = shared_data / PGB / "poly_a.arabidopsis_thaliana"
    metrics = run(
        recipe,
        tmp_path,
        "--task",
        "classification",
        "--train",
        str(data / "train.csv"),
        "--test",
        str(data / "test.csv"),
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "48",
    )
    assert metrics["task"] == "classification" and metrics["label_names"] == ["0", "1"]
    assert metrics["best_step"] in (3, 6) and metrics["steps"] == 6
    for split in ("validation", "test"):
        table = check_classification(tmp_path, metrics, split)
        assert len(table) == 48
    expected_test = pd.read_csv(data / "test.csv", nrows=48)
    assert (
        pd.read_parquet(tmp_path / "predictions_test.parquet")["id"].tolist()
        == expected_test["name"].tolist()
    )
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [3, 6]
    assert all(r["tokens_per_s_per_device"] > 0 for r in log if "loss" in r)
    # the best checkpoint is a plain model that reloads and reproduces the saved test probabilities
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    batch = tokenizer(
        expected_test["sequence"][:4].tolist(), truncation=True, max_length=24, return_tensors="pt"
    )
    with torch.no_grad():
        prob = model(**batch).logits.softmax(-1).numpy()
    saved = pd.read_parquet(tmp_path / "predictions_test.parquet").filter(like="prob_").to_numpy()[:4]
    np.testing.assert_allclose(prob, saved, atol=1e-5)


def test_regression_from_checkpoint_with_windows(recipe, shared_data, tiny_mlm_dir, tmp_path):
    data = shared_data / PGB / "promoter_strength.leaf"
    metrics = run(
        recipe,
        tmp_path,
        "--model",
        str(tiny_mlm_dir),
        "--task",
        "regression",
        "--train",
        str(data / "train.csv"),
        "--test",
        str(data / "test.csv"),
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "40",
        "--max_length",
        "12",
        "--long_sequences",
        "windows",
        "--pooling",
        "mean",
    )
    for split in ("validation", "test"):
        table = pd.read_parquet(tmp_path / f"predictions_{split}.parquet")
        assert len(table) == 40  # one pooled prediction per record
        y, p = table["label"].to_numpy(), table["pred"].to_numpy()
        m = metrics[split]
        _same(m["r2"], skm.r2_score(y, p))
        _same(m["pearson"], stats.pearsonr(y, p)[0])
        _same(m["spearman"], stats.spearmanr(y, p)[0])
        _same(m["mse"], skm.mean_squared_error(y, p))
    test_labels = pd.read_csv(data / "test.csv", nrows=40)["label"].to_numpy()
    np.testing.assert_allclose(
        pd.read_parquet(tmp_path / "predictions_test.parquet")["label"], test_labels, rtol=1e-6
    )
    assert metrics["metric_for_best"] == "r2" and metrics["long_sequences"] == "windows"
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tmp_path / "model")
    assert config.problem_type == "regression" and config.pooling == "mean" and config.num_labels == 1


def test_multilabel(recipe, shared_data, tmp_path):
    data = (
        shared_data / PGB / "chromatin_access.arabidopis_thaliana" / "test.jsonl"
    )  # only a test subset exists
    metrics = run(
        recipe,
        tmp_path,
        "--task",
        "multilabel",
        "--train",
        str(data),
        "--test",
        str(data),
        "--validation_fraction",
        "0.3",
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "120",
    )
    assert metrics["metric_for_best"] == "auprc_macro"
    for split in ("validation", "test"):
        table = pd.read_parquet(tmp_path / f"predictions_{split}.parquet")
        y = table.filter(like="label_").to_numpy()
        prob = table.filter(like="prob_").to_numpy()
        assert y.shape == prob.shape == (120, 19)
        ok = [j for j in range(19) if 0 < y[:, j].sum() < len(y)]
        m = metrics[split]
        assert m["n_labels_undefined"] == 19 - len(ok)
        _same(m["auroc_macro"], skm.roc_auc_score(y[:, ok], prob[:, ok], average="macro"))
        _same(m["auroc_micro"], skm.roc_auc_score(y, prob, average="micro"))
        _same(m["auprc_macro"], skm.average_precision_score(y[:, ok], prob[:, ok], average="macro"))
        _same(m["auprc_micro"], skm.average_precision_score(y, prob, average="micro"))
    source = pd.read_json(data, lines=True)
    np.testing.assert_array_equal(
        pd.read_parquet(tmp_path / "predictions_test.parquet").filter(like="label_").to_numpy(),
        np.stack(source["labels"][:120].to_numpy()),
    )


@pytest.fixture(scope="module")
def gc_token_task(shared_data, tmp_path_factory):
    """Real splice-donor sequences (PGB) labelled per base: 1 for G/C, 0 for A/T; the labels are a string."""
    out = tmp_path_factory.mktemp("gc_tokens")
    source = pd.read_csv(shared_data / PGB / "splicing.arabidopsis_thaliana_donor" / "train.csv", nrows=120)
    source["sequence"] = source["sequence"].str[:150]
    source["labels"] = ["".join("1" if b in "GC" else "0" for b in s) for s in source["sequence"]]
    source[["name", "sequence", "labels"]].iloc[:80].to_csv(out / "train.csv", index=False)
    source[["name", "sequence", "labels"]].iloc[80:].to_parquet(out / "test.parquet")
    return out


@pytest.mark.parametrize("per_nucleotide", ["true", "false"])
def test_token_classification(recipe, gc_token_task, tmp_path, per_nucleotide):
    metrics = run(
        recipe,
        tmp_path,
        "--task",
        "token_classification",
        "--train",
        str(gc_token_task / "train.csv"),
        "--test",
        str(gc_token_task / "test.parquet"),
        "--long_sequences",
        "windows",
        "--max_length",
        "10",
        "--per_nucleotide",
        per_nucleotide,
    )
    for split in ("validation", "test"):
        table = pd.read_parquet(tmp_path / f"predictions_{split}.parquet")
        # windows of 54 nt every 27 nt: every base of every 150 nt record gets exactly one averaged prediction
        assert table.groupby("id")["position"].apply(list).map(lambda p: p == list(range(150))).all()
        check_classification(tmp_path, metrics, split)
        assert metrics[split]["n"] == len(table) and metrics[split]["n_uncovered"] == 0
    test = pd.read_parquet(gc_token_task / "test.parquet")
    saved = pd.read_parquet(tmp_path / "predictions_test.parquet")
    assert "".join(map(str, saved["label"][:150])) == test["labels"].iloc[0]


def _expected_adapter_parameters(model, method: str) -> int:
    """Adapter parameters implied by the default targets, counted from the plain model's linear layers."""
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or not name.startswith("genolm.encoder"):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if method == "lora" and leaf in ("query", "key", "value", "output", "up", "down"):
            total += 8 * (module.in_features + module.out_features)
        elif method == "ia3" and leaf in ("key", "value"):
            total += module.out_features
        elif method == "ia3" and leaf == "down":  # feed-forward: the scale applies to the input
            total += module.in_features
    return total


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_peft_trains_only_adapters_and_merges(recipe, shared_data, tiny_mlm_dir, tmp_path, method):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    data = shared_data / PGB / "splicing.arabidopsis_thaliana_donor"
    metrics = run(
        recipe,
        tmp_path,
        "--model",
        str(tiny_mlm_dir),
        "--task",
        "classification",
        "--peft",
        method,
        "--train",
        str(data / "train.csv"),
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "32",
    )
    base = AutoModelForSequenceClassification.from_pretrained(tiny_mlm_dir, num_labels=2).eval()
    head = sum(p.numel() for n, p in base.named_parameters() if n.startswith("classifier."))
    adapters = _expected_adapter_parameters(base, method)
    assert metrics["trainable_parameters"] == adapters + head
    assert metrics["total_parameters"] == sum(p.numel() for p in base.parameters()) + adapters + head

    # the adapter file holds only adapter weights and the trained head
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    marker = "lora_" if method == "lora" else "ia3_l"
    assert all(marker in k or ".classifier." in k for k in saved)
    assert sum(v.numel() for k, v in saved.items() if marker in k) == adapters

    # the merged model is a plain checkpoint: frozen weights equal the pretrained ones, and its outputs equal
    # those of the base model with the adapter loaded
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    assert not any("lora" in n or "ia3" in n for n, _ in merged.named_parameters())
    merged_state, base_state = merged.state_dict(), base.state_dict()
    for name in (
        "genolm.embeddings.word_embeddings.weight",
        "genolm.encoder.layers.0.attention_norm.weight",
        "genolm.encoder.layers.1.attention.query.weight"
        if method == "ia3"
        else "genolm.encoder.final_norm.bias",
    ):
        torch.testing.assert_close(merged_state[name], base_state[name], rtol=0, atol=0)
    changed = "genolm.encoder.layers.0.ffn.down.weight"
    assert not torch.equal(merged_state[changed], base_state[changed])
    with_adapter = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    batch = {
        "input_ids": torch.randint(4, 4100, (3, 20)),
        "attention_mask": torch.ones(3, 20, dtype=torch.long),
    }
    batch["attention_mask"][2, 12:] = 0
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, with_adapter(**batch).logits, rtol=1e-5, atol=1e-5)
    check_classification(tmp_path, metrics, "validation")


def test_fasta_input_and_early_stopping(recipe, shared_data, tmp_path):
    source = pd.read_csv(shared_data / PGB / "poly_a.arabidopsis_thaliana" / "train.csv", nrows=60)
    fasta = tmp_path / "train.fa"
    fasta.write_text("".join(f">{n}\n{s}\n" for n, s in zip(source["name"], source["sequence"])))
    source.assign(id=source["name"], label=source["label"].map({0: "background", 1: "polyA"}))[
        ["id", "label"]
    ].to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "run"
    metrics = run(
        recipe,
        out,
        "--task",
        "classification",
        "--train",
        str(fasta),
        "--labels_file",
        str(tmp_path / "labels.csv"),
        "--max_steps",
        "30",
        "--eval_every",
        "1",
        "--patience",
        "2",
        "--metric_for_best",
        "loss",
        "--lr",
        "0.05",
    )
    assert metrics["label_names"] == ["background", "polyA"]
    assert metrics["stopped_early"] and metrics["steps"] < 30
    assert metrics["steps"] - metrics["best_step"] == 2  # two validations without improvement, then stop
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "background", "1": "polyA"}
    table = pd.read_parquet(out / "predictions_validation.parquet")
    assert set(table["id"]) <= set(source["name"])


def test_esm_format_checkpoint_is_converted(recipe, shared_data, tmp_path):
    """An ESM-format checkpoint (how NT and AgroNT are published) is converted on the fly; its weights are used."""
    from transformers import AutoModelForSequenceClassification, EsmConfig, EsmForMaskedLM

    from genolm import GenoLMTokenizer
    from genolm.convert import write_esm_tokenizer

    config = EsmConfig(
        vocab_size=4105, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=1026, pad_token_id=1, mask_token_id=2, eos_token_id=None, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    esm = EsmForMaskedLM(config)
    esm.save_pretrained(tmp_path / "esm")
    write_esm_tokenizer(GenoLMTokenizer(), tmp_path / "esm")
    data = shared_data / PGB / "poly_a.arabidopsis_thaliana" / "test.csv"
    out = tmp_path / "run"
    run(recipe, out, "--model", str(tmp_path / "esm"), "--train", str(data), "--max_train_samples", "24",
        "--max_eval_samples", "8", "--peft", "ia3", "--max_steps", "2", "--eval_every", "2")  # fmt: skip
    assert json.loads((out / "base_model" / "config.json").read_text())["model_type"] == "genolm"
    tuned = AutoModelForSequenceClassification.from_pretrained(out / "model")
    torch.testing.assert_close(
        tuned.genolm.embeddings.word_embeddings.weight,
        esm.esm.embeddings.word_embeddings.weight,
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("head", ["sequence", "token"])
def test_model_classes_train_with_transformers_trainer(shared_data, tiny_mlm_dir, tokenizer, tmp_path, head):
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    from genolm.finetune import Collator, EncodedDataset, LabelSpec, encode_split, load_records

    records = load_records(shared_data / PGB / "splicing.arabidopsis_thaliana_donor" / "train.csv").subset(
        range(48)
    )
    if head == "token":
        records.labels = ["".join("1" if b in "GC" else "0" for b in s) for s in records.sequences]
        spec = LabelSpec.fit("token_classification", records)
        model = AutoModelForTokenClassification.from_pretrained(
            tiny_mlm_dir, num_labels=2, per_nucleotide=True
        )
    else:
        spec = LabelSpec.fit("classification", records)
        model = AutoModelForSequenceClassification.from_pretrained(tiny_mlm_dir, num_labels=2)
    dataset = EncodedDataset(encode_split(records, spec, tokenizer, max_length=24))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=2,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=dataset,
        data_collator=Collator(tokenizer.pad_token_id),
    )
    result = trainer.train()
    assert result.global_step == 4 and math.isfinite(result.training_loss)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    evaluation = trainer.evaluate()
    assert math.isfinite(evaluation["eval_loss"])
    predictions = trainer.predict(dataset)
    expected = (48, 24, 6, 2) if head == "token" else (48, 2)
    assert predictions.predictions.shape == expected


def test_recipe_command_line(recipe, tmp_path, capsys):
    """The script runs as a program with a YAML config and overrides (--learning_rate is an alias of --lr)."""
    if not (REPO_ROOT.parent / "shared" / "data" / "pgb").exists():
        pytest.skip("shared test data not found")
    out = tmp_path / "cli"
    command = [
        sys.executable,
        str(RECIPE),
        "--config",
        str(REPO_ROOT / "recipes" / "configs" / "finetune_debug.yaml"),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--eval_every",
        "2",
        "--learning_rate",
        "3e-4",
        "--max_train_samples",
        "16",
        "--max_eval_samples",
        "16",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from genolm.finetune import FinetuneConfig

    resolved = load_yaml(FinetuneConfig, out / "config.yaml")
    assert resolved["lr"] == 3e-4 and resolved["max_steps"] == 2 and resolved["model"] == "preset:tiny"
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2

    with pytest.raises(ConfigError, match="unrecognized argument '--max_stepz'"):
        recipe.main(["--train", "x.csv", "--max_stepz", "3"])
    with pytest.raises(ConfigError, match="--peft: 'adapters' is not one of 'none', 'lora', 'ia3'"):
        recipe.main(["--train", "x.csv", "--peft", "adapters"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max_steps", "-5"], "max_steps must be >= 1 (or set epochs), got -5"),
        (["--batch_size", "0"], "batch_size must be >= 1, got 0"),
        (["--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
        (["--lr", "nan"], "lr must be a finite number > 0, got nan"),
        (["--lora_dropout", "1.5"], "lora_dropout must be in [0, 1], got 1.5"),
        (["--epochs", "0"], "epochs must be a finite number > 0, got 0.0"),
        (["--validation_fraction", "1"], "validation_fraction must be in (0, 1), got 1.0"),
    ],
)
def test_out_of_range_values_are_config_errors(flags, message):
    from genolm.finetune import FinetuneConfig
    from genolm.recipe_config import config_from_args

    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        config_from_args(FinetuneConfig, ["--train", "x.csv", *flags])


def test_diverged_finetuning_stops_and_saves_nothing(recipe, shared_data, tmp_path):
    """--lr 1e6 makes the loss NaN: the run stops at the first check (a logging step) with the step, loss and
    gradient norm, before any validation picks a best model, and writes no model or metrics."""
    out = tmp_path / "diverged"
    train = shared_data / PGB / "poly_a.arabidopsis_thaliana" / "train.csv"
    with pytest.raises(TrainingDivergedError, match=r"^training diverged at step [1-4]: loss nan, gradient norm nan; "
                       r"try a lower --lr \(now 1e\+06\)$"):
        recipe.main(["--train", str(train), "--max_train_samples", "64", "--max_eval_samples", "16",
                     "--max_steps", "6", "--eval_every", "6", "--log_every", "2", "--batch_size", "8",
                     "--max_length", "24", "--lr", "1e6", "--mixed_precision", "no", "--output_dir", str(out)])
    assert not (out / "model").exists() and not (out / "metrics.json").exists()
    log = out / "log.jsonl"
    assert not log.exists() or "NaN" not in log.read_text()


def test_shipped_finetune_configs_parse():
    from genolm.finetune import FinetuneConfig

    paths = sorted((REPO_ROOT / "recipes" / "configs").glob("finetune_*.yaml"))
    assert paths
    for path in paths:
        FinetuneConfig(**load_yaml(FinetuneConfig, path))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "token_classification"])
def test_two_process_run_gathers_every_prediction(shared_data, gc_token_task, tmp_path, task):
    """Under torchrun with 2 CPU processes, validation / test outputs gathered from both processes equal a
    single-process pass of the saved model over the same windows."""
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from genolm import GenoLMTokenizer
    from genolm.finetune import (
        Collator,
        EncodedDataset,
        LabelSpec,
        encode_split,
        load_records,
        predict,
        score,
    )

    if task == "classification":
        train = test = shared_data / PGB / "poly_a.arabidopsis_thaliana" / "test.csv"
    else:
        train, test = gc_token_task / "train.csv", gc_token_task / "test.parquet"
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(RECIPE), "--task", task,
        "--train", str(train), "--test", str(test), "--max_train_samples", "40", "--max_eval_samples", "37",
        "--max_steps", "4", "--eval_every", "2", "--batch_size", "4", "--max_length", "12",
        "--long_sequences", "windows", "--output_dir", str(out), "--mixed_precision", "no",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x 1 x 2 sequences" in done.stdout  # 2 processes

    model_class = (
        AutoModelForSequenceClassification if task == "classification" else AutoModelForTokenClassification
    )
    model = model_class.from_pretrained(out / "model").eval()
    tokenizer = GenoLMTokenizer.from_pretrained(out / "model")
    records = load_records(test, task=task).subset(range(37))
    spec = LabelSpec.fit(task, load_records(train, task=task))
    split = encode_split(records, spec, tokenizer, 12, "windows")
    loader = DataLoader(
        EncodedDataset(split, with_window=True), batch_size=5, collate_fn=Collator(tokenizer.pad_token_id)
    )
    metrics, table = score(split, spec, predict(model, loader, split, task))
    saved = pd.read_parquet(out / "predictions_test.parquet")
    assert len(saved) == len(table)
    np.testing.assert_allclose(
        saved.filter(like="prob_").to_numpy(), table.filter(like="prob_").to_numpy(), atol=1e-5
    )
    reported = json.loads((out / "metrics.json").read_text())["test"]
    assert reported["n"] == metrics["n"] and reported["mcc"] == pytest.approx(metrics["mcc"], abs=1e-6)


@pytest.mark.slow
def test_finetune_vs_kmer_benchmark_smoke(shared_data, tmp_path):
    """The benchmark runs end to end (builder split, no pretraining, a few steps) and ends with its JSON line."""
    command = [
        sys.executable, str(REPO_ROOT / "benchmarks" / "finetune_vs_kmer.py"), "--out", str(tmp_path),
        "--folds", "0", "--pretrain-steps", "0", "--steps", "4", "--eval-every", "2",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {
        "kmer_lr",
        "finetune_scratch",
        "beats_kmer_baseline",
        "verdict",
        "mcc_delta_ci95_row_bootstrap",
    }
    assert expected <= set(result)
    assert result["test_windows_scored"] == len(pd.read_parquet(tmp_path / "task" / "test.parquet"))


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_peft_defaults_need_no_target_modules(method):
    """``import genolm`` registers peft defaults for model type genolm: a bare peft config adapts the encoder's
    layers (LoRA: query, key, value and the dense layers; IA3: key, value and ffn.down as feed-forward)."""
    from peft import IA3Config, LoraConfig, get_peft_model

    from genolm import GenoLMConfig, GenoLMForSequenceClassification

    torch.manual_seed(0)
    model = GenoLMForSequenceClassification(GenoLMConfig.from_preset("tiny", num_labels=2))
    config = LoraConfig(task_type="SEQ_CLS") if method == "lora" else IA3Config(task_type="SEQ_CLS")
    peft_model = get_peft_model(model, config)
    marker = "lora_A" if method == "lora" else "ia3_l"
    adapted = {n.split(f".{marker}")[0].removeprefix("base_model.model.") for n, _ in peft_model.named_parameters()
               if marker in n}
    expected = {"attention.query", "attention.key", "attention.value", "attention.output", "ffn.up", "ffn.down"}
    if method == "ia3":
        expected = {"attention.key", "attention.value", "ffn.down"}
        assert set(peft_model.peft_config["default"].feedforward_modules) == {"down"}
    layers = model.config.num_hidden_layers
    assert adapted == {f"genolm.encoder.layers.{i}.{m}" for i in range(layers) for m in expected}
    batch = torch.randint(6, 4100, (2, 12))
    peft_model(input_ids=batch).logits.sum().backward()
    assert all(p.grad is not None for n, p in peft_model.named_parameters() if marker in n)


def test_second_run_into_a_used_folder_needs_overwrite(recipe, shared_data, tmp_path):
    """A second fine-tuning run into a folder holding a finished one is refused (nothing of the first is
    touched); --overwrite replaces it; a run in progress keeps others out."""
    import hashlib

    from genolm.errors import OutputPathError
    from genolm.outputs import run_lock

    data = shared_data / PGB / "poly_a.arabidopsis_thaliana"
    args = ["--task", "classification", "--train", str(data / "train.csv"), "--max_train_samples", "32",
            "--max_eval_samples", "16"]
    out = tmp_path / "run"
    run(recipe, out, *args)
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(OutputPathError, match=rf"output_dir {out} holds another run \(config\.yaml, log\.jsonl, metrics\.json"):
        run(recipe, out, *args, "--seed", "1")
    with run_lock(out):
        with pytest.raises(OutputPathError, match=rf"{out} is in use by another run"):
            run(recipe, out, *args, "--seed", "1", "--overwrite")
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()} == digests
    metrics = run(recipe, out, *args, "--seed", "1", "--overwrite")
    assert metrics["steps"] == 6 and (out / "model" / "config.json").exists()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert sum(1 for r in log if r.get("step") == 3 and "loss" in r) == 1  # one run's lines, not two
