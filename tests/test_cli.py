"""The ``genolm`` command line: registry, light start-up, defaults shared with the library, error reporting."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genolm import cli, defaults
from genolm.cli import build_parser, command_names, main

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "accelerate", "pandas", "pyarrow", "pysam")


def _run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _parser_of(words: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in words:
        parser = _subparsers(parser)[word]
    return parser


def _defaults(words: tuple[str, ...]) -> dict[str, object]:
    return {a.dest: a.default for a in _parser_of(words)._actions if a.dest != "help"}


# --- registry -------------------------------------------------------------------------------------------------


def test_registry_lists_every_command():
    """The parser's commands are exactly the registry's, and every ``*_parser`` of genolm.cli is registered."""

    def walk(parser, prefix=()):
        children = _subparsers(parser)
        if not children:
            yield prefix
        for name, child in children.items():
            yield from walk(child, (*prefix, name))

    registered = list(command_names())
    assert sorted(walk(build_parser())) == sorted(registered)
    assert {"convert", "info", "embed", "publish", "vep", "ism", "annotate"} <= {w[0] for w in registered}
    assert {("data", "manifest"), ("data", "prepare"), ("data", "make-task")} <= set(registered)

    entries = []

    def collect(registry):
        for entry in registry.values():
            collect(entry) if isinstance(entry, dict) else entries.append(entry)

    collect(cli.COMMANDS)
    source_functions = set()
    for path in (REPO_ROOT / "genolm" / "cli").glob("[!_]*.py"):
        module = f"genolm.cli.{path.stem}"
        source_functions |= {
            (module, line.split("(")[0].removeprefix("def "))
            for line in path.read_text().splitlines()
            if line.startswith("def ") and line.split("(")[0].endswith("_parser")
        }
    assert set(entries) == source_functions


def test_help_of_every_command_imports_nothing_heavy():
    """``genolm --help`` and ``genolm <command> --help`` (groups and their commands too) load no torch or
    transformers: checked in a fresh interpreter after every help text was printed."""
    words = [[]] + [list(w) for w in command_names()] + [["data"]]
    code = f"""
import json, sys, contextlib, io
from genolm.cli import main
for words in {json.dumps(words)}:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*words, "--help"])
        except SystemExit as stop:
            assert stop.code == 0, (words, stop.code)
    assert "usage: genolm" in out.getvalue(), words
print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))
"""
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("module", ["genolm", "genolm.cli"])
def test_python_dash_m_runs_the_command_line(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "data", "prepare", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: genolm data prepare" in result.stdout and "--num-shards" in result.stdout


# --- defaults shared with the library --------------------------------------------------------------------------


def _signature_defaults(function) -> dict[str, object]:
    return {
        name: p.default for name, p in inspect.signature(function).parameters.items() if p.default is not p.empty
    }


def _library_functions():
    from genolm.data.manifest import build_ncbi_manifest
    from genolm.data.shards import prepare_shards
    from genolm.data.windows import WindowOptions
    from genolm.embed import embed_fasta
    from genolm.inference import run_annotate, run_ism, run_vep
    from genolm.publish import publish

    window_fields = {f.name: f.default for f in dataclasses.fields(WindowOptions)}
    return {
        ("embed",): _signature_defaults(embed_fasta),
        ("vep",): _signature_defaults(run_vep),
        ("ism",): _signature_defaults(run_ism),
        ("annotate",): _signature_defaults(run_annotate),
        ("publish",): _signature_defaults(publish),
        # prepare passes the WindowOptions fields it does not name itself through to WindowOptions
        ("data", "prepare"): {**window_fields, **_signature_defaults(prepare_shards)},
        ("data", "manifest"): _signature_defaults(build_ncbi_manifest),
    }


def test_defaults_equal_the_library_defaults():
    """Every option named like a parameter of the library function it feeds has that parameter's default."""
    aliases = {"ncbi_group": "group", "ncbi_url": "base_url", "level": "levels", "skip_label": "skip_labels"}
    compared = {}
    for words, library in _library_functions().items():
        for dest, default in _defaults(words).items():
            name = aliases.get(dest, dest)
            if name not in library or dest in ("quiet",):
                continue
            expected = library[name]
            if isinstance(expected, tuple):  # tuples in signatures, lists from argparse
                expected = list(expected)
            if expected is None and default == []:  # an empty list option means none (publish --tags)
                expected = []
            assert default == expected, (words, dest, default, expected)
            compared[(words, dest)] = default
    for words, batch_size in [
        (("embed",), defaults.EMBED_BATCH_SIZE),
        (("vep",), defaults.VEP_BATCH_SIZE),
        (("ism",), defaults.ISM_BATCH_SIZE),
        (("annotate",), defaults.ANNOTATE_BATCH_SIZE),
    ]:
        assert compared[(words, "batch_size")] == batch_size
        assert compared[(words, "device")] == "auto" and compared[(words, "dtype")] == "auto"
    assert compared[(("data", "prepare"), "num_shards")] == defaults.PREPARE_NUM_SHARDS
    assert compared[(("data", "prepare"), "max_tokens")] == defaults.PREPARE_MAX_TOKENS
    assert len(compared) >= 45


def test_runtime_options_are_spelled_the_same_everywhere():
    for words in [("embed",), ("vep",), ("ism",), ("annotate",)]:
        options = {s for a in _parser_of(words)._actions for s in a.option_strings}
        assert {"--batch-size", "--device", "--dtype", "--compile", "--threads", "--quiet"} <= options, words
        assert "--no-progress" not in options
        compile_option = next(a for a in _parser_of(words)._actions if "--compile" in a.option_strings)
        assert compile_option.default is defaults.COMPILE is False  # off: on the CPU compilation does not pay
        assert "--no-compile" in compile_option.option_strings
    assert "--quiet" in {s for a in _parser_of(("data", "prepare"))._actions for s in a.option_strings}


# --- errors -----------------------------------------------------------------------------------------------------


def test_user_error_is_one_line_and_exit_2():
    code = """
import sys
import genolm.cli.core as core
from genolm.errors import InputDataError

def bad_input(args):
    raise InputDataError(f"{args.path}: line 3: weight\\n'x' is not a number")

core.run_info = bad_input
from genolm.cli import main
sys.exit(main(["info", "run/manifest.tsv"]))
"""
    result = _run_python(code)
    assert result.returncode == 2
    assert result.stderr == "genolm info: error: run/manifest.tsv: line 3: weight 'x' is not a number\n"


def test_a_bug_keeps_its_traceback_and_exit_1():
    code = """
import sys
import genolm.cli.data as data

def bug(args):
    return {}["missing key"]

data.run_manifest = bug
from genolm.cli import main
sys.exit(main(["data", "manifest", "out.tsv"]))
"""
    result = _run_python(code)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "KeyError: 'missing key'" in result.stderr and "in bug" in result.stderr


def test_a_bug_propagates_from_main(monkeypatch):
    def bug(args):
        raise ValueError("an internal invariant failed")

    monkeypatch.setattr("genolm.cli.core.run_info", bug)
    with pytest.raises(ValueError, match="internal invariant"):
        main(["info", "anything"])


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["embed", "--model", "m", "--fasta", "f.fa", "--out", "o.npz", "--dtype", "float64"])
    assert stop.value.code == 2
    assert "invalid choice: 'float64'" in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def broken_checkpoints(tmp_path, tiny_mlm_dir):
    """Copies of the tiny checkpoint: without weights, with a corrupt safetensors file, with a vocab_size that
    does not fit the embedding table."""
    folders = {}
    for name in ("no_weights", "corrupt", "vocab"):
        folders[name] = shutil.copytree(tiny_mlm_dir, tmp_path / name)
    (folders["no_weights"] / "model.safetensors").unlink()
    weights = folders["corrupt"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # header cut short
    config_file = folders["vocab"] / "config.json"
    config = json.loads(config_file.read_text())
    config["vocab_size"] += 3
    config_file.write_text(json.dumps(config))
    return folders


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_weights", "no weights (model.safetensors or pytorch_model.bin) in this folder"),
        ("corrupt", "not a readable safetensors file"),
        ("vocab", "has shape [4105, 64] but config.json implies [4108, 64]"),
    ],
)
@pytest.mark.parametrize("command", ["info", "convert"])
def test_broken_checkpoint_is_one_line_naming_the_path(broken_checkpoints, tmp_path, capsys, case, message, command):
    folder = broken_checkpoints[case]
    argv = ["info", str(folder)] if command == "info" else ["convert", "genolm-to-esm", str(folder), str(tmp_path / "out")]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"genolm {command}: error: {folder}")
    assert message in line
    assert not (tmp_path / "out").exists()


def test_broken_esm_checkpoint_is_one_line(tiny_mlm_dir, tmp_path, capsys):
    from genolm.convert import genolm_to_esm

    esm = tmp_path / "esm"
    genolm_to_esm(tiny_mlm_dir, esm, verify=False)
    capsys.readouterr()  # transformers' progress bar while saving
    config = json.loads((esm / "config.json").read_text())
    (esm / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] - 1}))
    assert main(["convert", "esm-to-genolm", str(esm), str(tmp_path / "genolm")]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"genolm convert: error: {esm}: weight ") and "config.json implies" in line
    assert main(["info", str(esm)]) == 2
    assert "config.json implies" in _one_error_line(capsys)
    (esm / "model.safetensors").write_bytes(b"\x00" * 7)
    assert main(["convert", "esm-to-genolm", str(esm), str(tmp_path / "genolm")]) == 2
    assert f"{esm / 'model.safetensors'}: not a readable safetensors file" in _one_error_line(capsys)


def test_hub_id_not_in_the_offline_cache_is_one_line(monkeypatch, tmp_path, capsys, shared_data):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    argv = ["embed", "--model", "nobody-here/no-such-model", "--fasta", str(shared_data / "athaliana_chloroplast.fa")]
    assert main([*argv, "--out", str(tmp_path / "e.npz")]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("genolm embed: error: model 'nobody-here/no-such-model': not in the local Hugging Face cache")


# --- import genolm stays light and still registers the Auto classes -------------------------------------------


def test_import_genolm_is_light():
    result = _run_python("import sys, genolm; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "first_import",
    [
        "import genolm",
        "from genolm import GenoLMConfig",  # genolm's config module is what imports transformers
        "import genolm.tokenization_genolm",
    ],
)
def test_import_genolm_then_transformers_registers_the_auto_classes(tiny_mlm_dir, first_import):
    """Whichever part of genolm is imported first, transformers' Auto classes then load genolm checkpoints
    (no trust_remote_code)."""
    code = f"""
{first_import}
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
model = AutoModelForMaskedLM.from_pretrained({str(tiny_mlm_dir)!r})
tokenizer = AutoTokenizer.from_pretrained({str(tiny_mlm_dir)!r})
print(type(AutoConfig.from_pretrained({str(tiny_mlm_dir)!r})).__name__, type(model).__name__, type(tokenizer).__name__)
"""
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["GenoLMConfig", "GenoLMForMaskedLM", "GenoLMTokenizer"]


def test_import_transformers_then_genolm_registers_the_auto_classes(tiny_mlm_dir):
    code = f"""
from transformers import AutoModelForMaskedLM
import genolm
print(type(AutoModelForMaskedLM.from_pretrained({str(tiny_mlm_dir)!r})).__name__)
from genolm import GenoLMConfig, GenoLMTokenizer, PRESETS
print(GenoLMConfig.__module__, GenoLMTokenizer.__name__, "tiny" in PRESETS, "GenoLMModel" in dir(genolm))
"""
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["GenoLMForMaskedLM", "genolm.configuration_genolm", "GenoLMTokenizer", "True", "True"]


def test_unknown_attribute_of_genolm_is_an_attribute_error():
    import genolm

    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        genolm.NotAThing  # noqa: B018


def test_quiet_prints_nothing(tiny_mlm_dir, shared_data, tmp_path, capsys):
    fasta = tmp_path / "short.fa"
    fasta.write_text("".join((shared_data / "athaliana_chloroplast.fa").read_text().splitlines(keepends=True)[:20]))
    argv = ["embed", "--model", str(tiny_mlm_dir), "--fasta", str(fasta), "--out", str(tmp_path / "e.npz")]
    assert main([*argv, "--threads", "1", "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert main([*argv, "--threads", "1"]) == 0
    assert "wrote 1 embeddings" in capsys.readouterr().out
