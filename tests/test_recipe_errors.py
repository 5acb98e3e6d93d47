"""A user's mistake given to a recipe ends in one line on stderr, ``PROG: error: MESSAGE``, and exit code 2 (no
traceback), whether the recipe runs as ``python recipes/X.py`` or under ``accelerate launch``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from genolm.finetune.data import SEQUENCE_LETTERS

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_DEBUG = REPO / "recipes" / "configs" / "debug.yaml"


def _run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _recipe(name: str, *args: str) -> subprocess.CompletedProcess:
    if name == "finetune":
        args = ("--train", "t.csv", *args)  # the one field without a default
    return _run([sys.executable, str(REPO / "recipes" / f"{name}.py"), *args])


def _the_error_line(done: subprocess.CompletedProcess, prog: str) -> str:
    """The one ``PROG: error:`` line of a run that failed with a user's error, and nothing else on stderr."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), done.stderr[-3000:]
    return lines[0][len(f"{prog}: error: "):]


@pytest.fixture(scope="module")
def bad_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("yaml") / "broken.yaml"
    path.write_text("max_steps: 3\nlr: [1e-4\n")
    return path


@pytest.fixture(scope="module")
def unknown_key_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("yaml") / "unknown.yaml"
    path.write_text("max_stepz: 3\n")
    return path


# --------------------------------------------------------------------------------------------------
# config errors: both recipes
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["pretrain", "finetune"])
def test_yaml_syntax_error(recipe, bad_yaml, tmp_path):
    message = _the_error_line(_recipe(recipe, "--config", str(bad_yaml), "--output_dir", str(tmp_path)), f"{recipe}.py")
    assert message == (
        f"{bad_yaml}:3:1: invalid YAML: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence at line 2, column 5)"
    )


@pytest.mark.parametrize(
    ("recipe", "cls"),
    [("pretrain", "PretrainConfig"), pytest.param("finetune", "FinetuneConfig", marks=pytest.mark.slow)],
)
def test_unknown_yaml_key(recipe, cls, unknown_key_yaml, tmp_path):
    message = _the_error_line(_recipe(recipe, "--config", str(unknown_key_yaml)), f"{recipe}.py")
    assert message.startswith(f"{unknown_key_yaml}: unknown {cls} field 'max_stepz' (did you mean 'max_steps'?)")


# each case is a separate process start (seconds): two run by default, all four with the slow tests
@pytest.mark.parametrize(
    ("recipe", "flags", "message"),
    [
        ("pretrain", ["--max_steps", "-5"], "max_steps must be >= 1, got -5"),
        ("finetune", ["--batch_size", "0"], "batch_size must be >= 1, got 0"),
        pytest.param("finetune", ["--max_steps", "-5"], "max_steps must be >= 1", marks=pytest.mark.slow),
        pytest.param("pretrain", ["--batch_size", "0"], "batch_size must be >= 1, got 0", marks=pytest.mark.slow),
    ],
)
def test_out_of_range_value(recipe, flags, message, tmp_path):
    common = ["--config", str(PRETRAIN_DEBUG)] if recipe == "pretrain" else []
    got = _the_error_line(_recipe(recipe, *common, *flags, "--output_dir", str(tmp_path)), f"{recipe}.py")
    assert got.startswith(message)
    assert not any(tmp_path.iterdir()), "a config error must not leave outputs"


def test_model_override_typo(tmp_path):
    got = _the_error_line(
        _recipe("pretrain", "--config", str(PRETRAIN_DEBUG), "--model_overrides.num_hiden_layers", "3",
                "--output_dir", str(tmp_path)),
        "pretrain.py",
    )
    assert got == "model_overrides: 'num_hiden_layers' is not a GenoLMConfig field; did you mean 'num_hidden_layers'?"


# --------------------------------------------------------------------------------------------------
# fine-tuning tables
# --------------------------------------------------------------------------------------------------
def _finetune_on(table: Path, tmp_path: Path) -> str:
    done = _recipe("finetune", "--train", str(table), "--max_steps", "2", "--mixed_precision", "no",
                   "--output_dir", str(tmp_path / "out"))
    return _the_error_line(done, "finetune.py")


def test_empty_table(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert _finetune_on(tmp_path / "empty.csv", tmp_path) == f"{tmp_path / 'empty.csv'}: empty table (no header, no rows)"


def test_invalid_sequence_characters(tmp_path):
    table = tmp_path / "dna.csv"
    pd.DataFrame({"sequence": ["ACGTACGT", "ACGT>ACGT", "GATTACA"], "label": [0, 1, 0]}).to_csv(table, index=False)
    assert _finetune_on(table, tmp_path) == (
        f"{table}: line 3 (id '1'): invalid character '>' at position 5 of the sequence "
        f"(allowed: {SEQUENCE_LETTERS}, either case)"
    )


def test_labels_that_are_not_classes(tmp_path):
    table = tmp_path / "labels.csv"
    sequences = ["ACGTACGT", "ACGTTACG", "GATTACAG", "CCGGAATT"]
    pd.DataFrame({"sequence": sequences, "label": [0, 1, 2.5, "yes"]}).to_csv(table, index=False)
    assert _finetune_on(table, tmp_path).startswith(f"{table}: line 4 (id '2'), column 'label': label '2.5' is not a class")


# --------------------------------------------------------------------------------------------------
# accelerate launch
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["pretrain", "finetune"])
def test_under_accelerate_launch(recipe, bad_yaml, tmp_path):
    """``accelerate launch`` adds its own traceback when the script fails unless given ``--quiet``; with it, the
    recipe's one line is all there is, and the launch fails."""
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("no accelerate launcher beside this Python")
    done = _run([str(accelerate), "launch", "--quiet", "--num_cpu_threads_per_process", "1",
                 "--config_file", str(REPO / "recipes" / "accelerate" / "cpu.yaml"),
                 f"recipes/{recipe}.py", "--config", str(bad_yaml), "--output_dir", str(tmp_path),
                 *(["--train", "t.csv"] if recipe == "finetune" else [])])
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert errors == [f"{recipe}.py: error: {bad_yaml}:3:1: invalid YAML: expected ',' or ']', but got '<stream end>' "
                      "(while parsing a flow sequence at line 2, column 5)"], done.stderr[-3000:]
