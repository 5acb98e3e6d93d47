"""Workflows a new user follows, end to end on the shared data: make-task -> fine-tune, data prepare ->
pretrain, publish -> load -> vep/embed; and what they are told when a split, a contig or a model is missing."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pysam
import pytest
from sklearn import metrics as skm

from genolm.cli import main
from genolm.errors import ConfigError, InputDataError

REPO_ROOT = Path(__file__).resolve().parents[1]
CHR5 = ("athaliana_chr5_tail.fa.gz", "athaliana_chr5_tail.gff3")


def load_recipe(name: str):
    """recipes/NAME.py imported as a module (its ``main(argv)`` runs the recipe in this process)."""
    spec = importlib.util.spec_from_file_location(f"{name}_recipe_workflows", REPO_ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_task(shared_data, out: Path, task: str, *extra: str) -> dict:
    fasta, gff3 = (str(shared_data / name) for name in CHR5)
    assert main(["data", "make-task", "--fasta", fasta, "--gff3", gff3, "--task", task, *extra, str(out)]) == 0
    return json.loads((out / "task.json").read_text())


# ----------------------------------------------------------------------------------------------------------
# make-task: block sizes and warnings
# ----------------------------------------------------------------------------------------------------------
def test_make_task_warns_naming_the_fix_for_empty_and_tiny_splits(shared_data, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="genolm.data.tasks")
    info = make_task(shared_data, tmp_path / "cds", "cds_tokens")  # 6 kb windows over 11 genes: 9 windows
    rows = {split: count["rows"] for split, count in info["counts"].items()}
    assert sum(rows.values()) == len(pd.read_parquet(tmp_path / "cds" / "train.parquet")) + rows["validation"] + rows["test"]
    messages = [r.getMessage() for r in caplog.records]
    for split, n in rows.items():
        if n == 0:
            assert any(f"split {split!r} is empty" in m and "--window" in m for m in messages), messages
        elif n < 16:
            assert any(f"split {split!r} has only {n} rows (fewer than one batch of 16)" in m for m in messages)
    assert rows["validation"] == 0 or rows["test"] == 0 or min(rows.values()) < 16  # the small case is hit


def test_make_task_block_size_gives_every_split_rows_on_a_small_annotation(shared_data, tmp_path):
    from genolm.data.tasks import build_task

    fasta, gff3 = (shared_data / name for name in CHR5)
    chosen = build_task(fasta, gff3, "cds_tokens", window=1000)
    counts = chosen["split"].value_counts()
    assert {"train", "validation", "test"} <= set(counts.index)
    assert counts["train"] == counts.max()
    # the former default, blocks of 10 windows, gives held-out splits larger than train on these 11 genes
    fixed = build_task(fasta, gff3, "cds_tokens", window=1000, block_size=10_000)["split"].value_counts()
    assert fixed["train"] < fixed.max()
    assert counts.sum() >= fixed.sum() - 5  # smaller blocks drop few windows at their boundaries


# ----------------------------------------------------------------------------------------------------------
# data prepare: block sizes and warnings
# ----------------------------------------------------------------------------------------------------------
def test_prepare_picks_blocks_that_give_validation_data_and_warns_when_it_cannot(shared_data, tmp_path, caplog):
    from genolm.data.shards import read_shard_metadata
    from genolm.data.windows import WindowOptions, split_of

    fasta = str(shared_data / "athaliana_chloroplast.fa")
    caplog.set_level(logging.WARNING, logger="genolm.data.shards")
    common = ["--num-shards", "2", "--max-tokens", "127", "--quiet"]
    assert main(["data", "prepare", fasta, str(tmp_path / "a"), "--validation-fraction", "0.05", *common]) == 0
    metadata = read_shard_metadata(tmp_path / "a")
    block = metadata["options"]["block_size"]
    assert 127 * 6 <= block < 1_000_000
    assert metadata["splits"]["validation"]["athaliana_chloroplast"]["rows"] > 0
    # the block size is the largest halving of 1 Mb whose hash rule puts a block in validation
    options = WindowOptions(max_tokens=127, validation_fraction=0.05, block_size=2 * block)
    blocks = range(-(-154_478 // (2 * block)))
    assert "validation" not in {split_of("athaliana_chloroplast", "NC_000932.1", i, options) for i in blocks}
    rows = metadata["splits"]["validation"]["athaliana_chloroplast"]["rows"]
    small = [m for m in (r.getMessage() for r in caplog.records) if "'validation'" in m]
    if rows < 16:
        assert small == [
            f"split 'validation' of 'athaliana_chloroplast' has only {rows} windows (fewer than one batch of 16); "
            f"use a larger --validation-fraction / --test-fraction, or a smaller --block-size (now {block} bases)"
        ]
    else:
        assert small == []

    caplog.clear()
    # 1 % of a 154 kb genome: no block size down to one window gives validation data -> a warning naming the fix
    assert main(["data", "prepare", fasta, str(tmp_path / "b"), *common, "--max-tokens", "1000"]) == 0
    assert read_shard_metadata(tmp_path / "b")["splits"]["validation"]["athaliana_chloroplast"].get("rows", 0) == 0
    assert any(
        "split 'validation' of 'athaliana_chloroplast' is empty; use a larger --validation-fraction" in r.getMessage()
        for r in caplog.records
    )


# ----------------------------------------------------------------------------------------------------------
# fine-tuning reads the label names of task.json
# ----------------------------------------------------------------------------------------------------------
def test_class_names_come_from_task_json_and_conflicts_are_refused(tmp_path):
    from genolm.finetune import task_class_names

    (tmp_path / "train.parquet").write_bytes(b"")
    (tmp_path / "task.json").write_text(json.dumps({"label_names": ["none", "donor"], "files": {"train": "train.parquet"}}))
    train = tmp_path / "train.parquet"
    assert task_class_names(train, "classification", None) == ["none", "donor"]
    assert task_class_names(train, "classification", ["none", "donor"]) == ["none", "donor"]
    assert task_class_names(train, "regression", None) is None
    assert task_class_names(tmp_path / "other.parquet", "classification", None) is None  # not the task's file
    with pytest.raises(ConfigError, match=r"class_names \['a', 'b'\] differ from label_names \['none', 'donor'\]"):
        task_class_names(train, "classification", ["a", "b"])
    (tmp_path / "task.json").write_text("{")
    with pytest.raises(InputDataError, match="task.json: cannot read the task description"):
        task_class_names(train, "classification", None)


def test_peft_wrapping_raises_no_deprecation_warning():
    import torch

    from genolm import GenoLMConfig, GenoLMForTokenClassification
    from genolm.finetune import apply_peft, peft_config

    torch.manual_seed(0)
    model = GenoLMForTokenClassification(GenoLMConfig.from_preset("tiny", num_labels=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_peft(model, peft_config("lora", "token_classification", None, None, 4, 8, 0.0))


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, extra",
    [("splice_sites", []), ("promoters", []), ("cds_tokens", ["--window", "1000"])],
)
def test_make_task_then_finetune_reports_the_task_label_names(shared_data, tmp_path, one_thread, task, extra):
    info = make_task(shared_data, tmp_path / "task", task, *extra)
    names = info["label_names"]
    out = tmp_path / "run"
    problem = "token_classification" if task == "cds_tokens" else "classification"
    args = [f"--{split}" for split in ("train", "validation", "test")]
    files = [str(tmp_path / "task" / f"{split}.parquet") for split in ("train", "validation", "test")]
    argv = ["--model", "preset:tiny", "--task", problem, "--max_steps", "2", "--eval_every", "2",
            "--batch_size", "4", "--max_length", "64", "--output_dir", str(out)]
    argv += [x for pair in zip(args, files) for x in pair]
    if task == "cds_tokens":
        argv += ["--per_nucleotide", "true", "--long_sequences", "windows"]
    metrics = load_recipe("finetune").main(argv)
    assert metrics["label_names"] == names
    table = pd.read_parquet(out / "predictions_test.parquet")
    scored = table[table["label"] != -100]
    assert list(scored["label_name"]) == [names[i] for i in scored["label"]]
    assert list(table["pred_name"]) == [names[i] for i in table["pred"]]
    f1 = skm.f1_score(scored["label"], scored["pred"], labels=range(len(names)), average=None, zero_division=0)
    assert list(metrics["test"]["f1_per_class"]) == names
    np.testing.assert_allclose(list(metrics["test"]["f1_per_class"].values()), f1, atol=1e-9)
    assert list(metrics["test"]["support"].values()) == [int((scored["label"] == i).sum()) for i in range(len(names))]
    model_config = json.loads((out / "model" / "config.json").read_text())
    assert [model_config["id2label"][str(i)] for i in range(len(names))] == names


def header_commands(config: Path) -> list[list[str]]:
    """The shell commands of a recipe config's header comment (lines after '#   ', '\\' continued)."""
    commands, current = [], ""
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if line.startswith("#   ") and (current or text.startswith(("genolm ", "python ", "accelerate "))):
            current += " " + text.rstrip("\\").strip()
            if not text.endswith("\\"):
                commands.append(shlex.split(current))
                current = ""
    return commands


@pytest.mark.slow
def test_cds_tokens_lora_config_header_runs_as_written(shared_data, tmp_path):
    """The two commands in the header of finetune_cds_tokens_lora.yaml, run from a project folder beside
    ../shared/data (fewer steps)."""
    config = REPO_ROOT / "recipes" / "configs" / "finetune_cds_tokens_lora.yaml"
    commands = header_commands(config)
    assert [c[:2] for c in commands] == [["genolm", "data"], ["python", "recipes/finetune.py"]]
    project = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "recipes", project / "recipes")
    (tmp_path / "shared").symlink_to(shared_data.parent, target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    make, finetune = commands
    done = subprocess.run(
        [sys.executable, "-m", "genolm", *make[1:]], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    finetune = [sys.executable, *finetune[1:], "--max_steps", "3", "--eval_every", "3"]
    done = subprocess.run(finetune, cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "\x1b[" not in done.stdout + done.stderr
    assert "FutureWarning" not in done.stderr and "LOAD REPORT" not in done.stderr
    metrics = json.loads((project / "runs" / "chr5-cds-tokens-lora" / "metrics.json").read_text())
    assert metrics["label_names"] == ["intergenic", "noncoding_exon", "CDS", "intron"]
    assert metrics["test"]["n"] > 0 and metrics["validation"]["n"] > 0


# ----------------------------------------------------------------------------------------------------------
# data prepare -> pretrain
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_prepare_then_pretrain_from_the_shard_folder(shared_data, tmp_path, one_thread):
    from genolm.data.shards import read_shard_metadata

    shards = tmp_path / "shards"
    fasta = str(shared_data / "athaliana_chloroplast.fa")
    argv = ["data", "prepare", fasta, str(shards), "--max-tokens", "63", "--validation-fraction", "0.1", "--quiet"]
    assert main([*argv, "--num-shards", "2"]) == 0
    stored = read_shard_metadata(shards)["splits"]
    out = tmp_path / "run"
    pretrain = load_recipe("pretrain")
    pretrain.main(["--config", str(REPO_ROOT / "recipes" / "configs" / "debug.yaml"), "--sources", str(shards),
                   "--max_tokens", "63", "--max_steps", "3", "--output_dir", str(out)])
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s][-1] == 3
    assert (out / "checkpoints" / "step-00000003" / "model.safetensors").exists()
    # the streamed windows are the shards' windows: the first training row read back equals the shard's
    from genolm import GenoLMTokenizer
    from genolm.data import genome_dataset

    row = next(iter(genome_dataset([str(shards)], GenoLMTokenizer(), max_tokens=63, split="validation")))
    assert row["species"] == "athaliana_chloroplast" and stored["validation"]["athaliana_chloroplast"]["rows"] > 0
    with pytest.raises(ConfigError, match="shard folder .* must be the only source"):
        genome_dataset([str(shards), fasta], GenoLMTokenizer(), max_tokens=63)


# ----------------------------------------------------------------------------------------------------------
# publish -> load -> vep / embed
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_publish_then_load_then_vep_and_embed(shared_data, tiny_mlm_dir, tmp_path, one_thread):
    import torch
    from transformers import AutoModelForMaskedLM

    import genolm  # noqa: F401  (registers the Auto classes)

    published = tmp_path / "published"
    assert main(["publish", str(tiny_mlm_dir), str(published)]) == 0
    model = AutoModelForMaskedLM.from_pretrained(published).eval()
    source = AutoModelForMaskedLM.from_pretrained(tiny_mlm_dir).eval()
    ids = torch.tensor([[3, 10, 20, 30, 40]])
    torch.testing.assert_close(model(input_ids=ids).logits, source(input_ids=ids).logits)

    fasta = shared_data / "athaliana_chloroplast.fa"
    out = tmp_path / "scored.vcf"
    assert main(["vep", "--model", str(published), "--fasta", str(fasta), "--vcf",
                 str(shared_data / "athaliana_chloroplast.vcf"), "--out", str(out), "--quiet"]) == 0
    with pysam.VariantFile(str(out)) as vcf:
        records = list(vcf)
    assert len(records) == 83
    assert sum("GENOLM_LLR" in r.info for r in records) == 83  # the 52 SNVs and the 31 indels

    embeddings = tmp_path / "emb.parquet"
    assert main(["embed", "--model", str(published), "--fasta", str(fasta), "--out", str(embeddings), "--quiet"]) == 0
    table = pd.read_parquet(embeddings)
    assert list(table["id"]) == ["NC_000932.1"] and len(table["embedding"][0]) == model.config.hidden_size


# ----------------------------------------------------------------------------------------------------------
# vep against the wrong reference, info, offline Hub ids
# ----------------------------------------------------------------------------------------------------------
def _vcf(path: Path, records: list[tuple[str, int, str, str]]) -> Path:
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    lines += [f"{c}\t{p}\t.\t{r}\t{a}\t.\tPASS\t." for c, p, r, a in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_vep_refuses_a_vcf_of_another_reference_and_warns_about_some_missing_contigs(
    shared_data, tiny_mlm_dir, tmp_path, capsys
):
    fasta = shared_data / "athaliana_chloroplast.fa"
    wrong = shared_data / "athaliana_chr5_tail.vcf"
    argv = ["vep", "--model", str(tiny_mlm_dir), "--fasta", str(fasta), "--quiet"]
    assert main([*argv, "--vcf", str(wrong), "--out", str(tmp_path / "x.vcf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no record's contig is a sequence of" in err
    assert "VCF contigs: Chr5_25975502_26975502" in err and "FASTA records: NC_000932.1" in err
    assert not (tmp_path / "x.vcf").exists()

    base = pysam.FastaFile(str(fasta)).fetch("NC_000932.1", 99, 100)
    alt = "A" if base != "A" else "C"
    mixed = _vcf(tmp_path / "mixed.vcf", [("NC_000932.1", 100, base, alt), ("chrX", 5, "A", "C")])
    out = tmp_path / "mixed.out.vcf"
    assert main([*argv, "--vcf", str(mixed), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "contigs chrX are not sequences of" in err
    with pysam.VariantFile(str(out)) as vcf:
        skips = [r.info.get("GENOLM_SKIP") for r in vcf]
    assert skips[1] in ("unknown_contig", ("unknown_contig",)) and skips[0] in (None, (None,))


def test_info_names_the_format_and_architecture_it_read(tiny_mlm_dir, tmp_path, capsys):
    from genolm.convert import genolm_to_esm

    esm = tmp_path / "esm"
    genolm_to_esm(tiny_mlm_dir, esm)
    capsys.readouterr()
    assert main(["info", str(esm), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "esm (transformers)"
    assert info["architecture"] == "EsmForMaskedLM (read as genolm's GenoLMForMaskedLM)"
    assert main(["info", str(tiny_mlm_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "genolm" and info["architecture"] == "GenoLMForMaskedLM"


@pytest.mark.parametrize("command", ["info", "embed", "vep"])
def test_an_uncached_hub_id_offline_is_one_line_saying_how_to_get_it(command, shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    fasta = str(shared_data / "athaliana_chloroplast.fa")
    argv = {
        "info": ["info", "nobody/no-model"],
        "embed": ["embed", "--model", "nobody/no-model", "--fasta", fasta, "--out", str(tmp_path / "e.parquet")],
        "vep": ["vep", "--model", "nobody/no-model", "--fasta", fasta, "--vcf",
                str(shared_data / "athaliana_chloroplast.vcf"), "--out", str(tmp_path / "v.vcf")],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"genolm {command}: error: model 'nobody/no-model': not in the local Hugging Face cache, and the Hub cannot "
        "be reached (offline: HF_HUB_OFFLINE is set or there is no network); get it with `hf download "
        "nobody/no-model` where there is network (same HF_HOME), or give a checkpoint folder\n"
    )


# ----------------------------------------------------------------------------------------------------------
# CI: missing shared data fails instead of skipping
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ci, outcome", [("true", "error"), ("", "skipped")])
def test_missing_shared_data_fails_under_ci_and_skips_otherwise(tmp_path, ci, outcome):
    tests = tmp_path / "project" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "tests" / "conftest.py", tests / "conftest.py")
    (tests / "test_reads_data.py").write_text("def test_data(shared_data):\n    assert shared_data.exists()\n")
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", str(tests)],
        cwd=tmp_path / "project", env=env, capture_output=True, text=True,
    )
    assert f"1 {outcome}" in done.stdout, done.stdout
    assert f"shared test data not found at {tmp_path / 'shared' / 'data'}" in done.stdout
    if outcome == "error":
        assert done.returncode == 1 and "CI=true requires it" in done.stdout


def test_vep_indexes_a_bgzipped_output(shared_data, tiny_mlm_dir, tmp_path, one_thread):
    vcf = shared_data / "athaliana_chloroplast.vcf"
    out = tmp_path / "scored.vcf.gz"
    assert main(["vep", "--model", str(tiny_mlm_dir), "--fasta", str(shared_data / "athaliana_chloroplast.fa"),
                 "--vcf", str(vcf), "--out", str(out), "--window-tokens", "64", "--quiet"]) == 0
    assert (tmp_path / "scored.vcf.gz.tbi").exists()
    positions = [int(line.split("\t")[1]) for line in vcf.read_text().splitlines() if not line.startswith("#")]
    with pysam.VariantFile(str(out)) as scored:
        fetched = [r.pos for r in scored.fetch("NC_000932.1", 10_000, 60_000)]  # 0-based half-open region
    assert fetched == [p for p in positions if 10_000 < p <= 60_000]


def test_quiet_commands_print_nothing(shared_data, tiny_mlm_dir, tmp_path, capfd):
    capfd.readouterr()
    assert main(["publish", str(tiny_mlm_dir), str(tmp_path / "published"), "--quiet"]) == 0
    assert main(["convert", "genolm-to-esm", str(tiny_mlm_dir), str(tmp_path / "esm"), "--quiet"]) == 0
    fasta, gff3 = (str(shared_data / name) for name in CHR5)
    argv = ["data", "make-task", "--fasta", fasta, "--gff3", gff3, "--task", "splice_sites", "--quiet"]
    assert main([*argv, str(tmp_path / "task")]) == 0
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert (tmp_path / "published" / "model.safetensors").exists() and (tmp_path / "task" / "task.json").exists()


def test_pretraining_with_gradient_checkpointing_warns_no_deprecation(tmp_path, one_thread):
    pretrain = load_recipe("pretrain")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pretrain.main(["--config", str(REPO_ROOT / "recipes" / "configs" / "debug.yaml"), "--max_steps", "1",
                       "--gradient_checkpointing", "true", "--output_dir", str(tmp_path / "run")])
    deprecations = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not [m for m in deprecations if "checkpointing" in m], deprecations
    assert (tmp_path / "run" / "checkpoints" / "step-00000001").is_dir()
