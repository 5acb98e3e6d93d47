"""The README's commands run as written: every command of every fenced ``bash`` block is either run (slow stage;
training with fewer steps, example file names replaced by the shared data, outputs in a temporary project
folder) or listed in ``SKIPPED`` with the reason it cannot run here.

The commands are read from README.md when the tests are collected, so a command added, changed or removed
there is tested as it stands. A command that matches no rule and uses a name that is not in ``EXAMPLE_FILES``
fails the fast test ``test_every_readme_command_is_run_or_skipped_for_a_reason``: add its stand-in there.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DATA = "../shared/data"  # relative to the project folder, as the README says

# Commands that cannot run in the test environment: (what identifies them, why).
SKIPPED: list[tuple[str, str]] = [
    ("python3 -m venv", "creates the virtual environment the tests already run in (tests/run.sh builds it)"),
    (". .venv/bin/activate", "activates that environment"),
    ("source ", "activates that environment"),
    ("pip install", "installs packages from the network; tests/run.sh installs the same pins once"),
    ("bash tests/run.sh", "the test runner itself"),
    ("bash tests/run_xla_stage.sh", "the XLA stage of tests/run.sh"),
    ("gcloud ", "needs a TPU pod slice"),
    ("PJRT_DEVICE=TPU", "needs a TPU"),
    ("--parallel xla_fsdp", "needs torch-xla; the XLA stage (pytest -m xla) runs this on 4 virtual CPU devices"),
    ("tpu_v4_fsdp.yaml", "needs a TPU"),
    ("gpu_fsdp.yaml", "needs GPUs"),
    ("--multi_gpu", "needs GPUs"),
    ("torchrun --nproc_per_node 8", "8 processes, one per GPU; tests/test_inference_sharded.py runs the same split with "
     "2 gloo processes and compares it with one"),
    ("torchrun --nnodes", "needs several GPU nodes"),
    ("genolm export", "needs a sharded training checkpoint; tests/test_checkpoint_sharded.py exports one and reloads it"),
    ("genolm data manifest", "downloads NCBI's assembly_summary.txt (network)"),
    ("--sources shards/", "reads the shards the command before it writes; tests/test_workflows.py runs prepare -> "
     "pretrain from shards"),
    ("benchmarks/", "a measurement taking minutes; run on its own"),
    ("agro-nucleotide-transformer-1b", "downloads the 1B AgroNT weights from the Hub (network; a GPU to train)"),
    ("finetune_agront_ia3.yaml", "starts from the 1B AgroNT weights on the Hub (network; a GPU to train)"),
    ("nt-v2-500m.yaml", "a 500M model on 12 kb windows: a GPU job"),
    ("agront-1b.yaml", "the 1B AgroNT recipe on 48 genomes: a TPU pod job"),
]

# The README's example names and their stand-ins: shared data (``DATA``), fixtures made by the test
# (``{tiny}``: a random tiny masked LM, ``{tiny_tokens}``: a tiny token classifier, ``{tmp}``: a fresh folder)
# or the output folders the commands write.
EXAMPLE_FILES: dict[str, str] = {
    "genome.fa.gz": f"{DATA}/athaliana_chr5_tail.fa.gz",
    "genes.gff3": f"{DATA}/athaliana_chr5_tail.gff3",
    "genes.fa": f"{DATA}/rice_chr2_1mb.cds.fa",
    "ref.fa.gz": f"{DATA}/athaliana_chloroplast.fa",
    "calls.vcf.gz": f"{DATA}/athaliana_chloroplast.vcf",
    "ref.fa": f"{DATA}/athaliana_chr5_tail.fa.gz",
    "Chr5:1,001-1,200": "Chr5_25975502_26975502:1,001-1,200",
    "plants.tsv": "recipes/data/example_3_species.tsv",
    "train.csv": f"{DATA}/pgb/poly_a.arabidopsis_thaliana/train.csv",
    "val.csv": f"{DATA}/pgb/poly_a.arabidopsis_thaliana/test.csv",
    "test.csv": f"{DATA}/pgb/poly_a.arabidopsis_thaliana/test.csv",
    "seqs.fa": "{tmp}/seqs.fa",
    "labels.tsv": "{tmp}/labels.tsv",
    "CKPT": "{tiny}",
    "CKPT_OR_HUB_ID": "{tiny}",
    "TOKEN_CLS_CKPT": "{tiny_tokens}",
    "my-checkpoint": "{tiny}",
    "agront-genolm": "{tiny}",  # stands for the converted AgroNT folder (conversion needs the Hub weights)
    "OUT_DIR": "{tmp}/out",
}
OUTPUT_NAMES = re.compile(
    r"^[\w./-]+\.(parquet|vcf\.gz|vcf|tsv|png|gff3|bed)$|^[\w-]+/$|^my-checkpoint-esm$|^ism/promoters$"
)
# Fewer steps for the commands that train (the rest of each command runs as written).
SHORTER = {
    "recipes/pretrain.py": ["--max_steps", "4", "--eval_every", "2", "--checkpoint_every", "4",
                            "--eval_batches", "2", "--log_every", "2"],
    "recipes/finetune.py": ["--max_steps", "2", "--eval_every", "2", "--max_train_samples", "64",
                            "--max_eval_samples", "32"],
}
NETWORK_FLAGS = {"--push"}  # an optional [...] group holding one of these is left out


@dataclass
class Command:
    line: int
    text: str
    env: dict[str, str] = field(default_factory=dict)
    words: list[str] = field(default_factory=list)

    @property
    def skip_reason(self) -> str | None:
        return next((reason for key, reason in SKIPPED if key in self.text), None)


def fenced_bash_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, body) of each fenced block marked ``bash``."""
    blocks, body, start = [], None, 0
    for number, line in enumerate(text.splitlines(), start=1):
        if body is None and line.strip() == "```bash":
            body, start = [], number + 1
        elif body is not None and line.strip() == "```":
            blocks.append((start, "\n".join(body)))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def readme_commands(text: str) -> list[Command]:
    """Every command of the README's bash blocks: continuation lines joined, comments dropped, ``&&`` split."""
    commands = []
    for start, body in fenced_bash_blocks(text):
        joined, first = "", None
        for offset, line in enumerate(body.splitlines()):
            if first is None:
                first = start + offset
            joined += line.rstrip().removesuffix("\\") + " "
            if line.rstrip().endswith("\\"):
                continue
            words = shlex.split(joined, comments=True)
            part: list[str] = []
            for word in [*words, "&&"]:
                if word != "&&":
                    part.append(word)
                    continue
                if part:
                    env = {}
                    while part and re.match(r"^[A-Z_][A-Z0-9_]*=", part[0]):
                        key, _, value = part.pop(0).partition("=")
                        env[key] = value
                    commands.append(Command(first, shlex.join([*(f"{k}={v}" for k, v in env.items()), *part]), env, part))
                part = []
            joined, first = "", None
    return commands


def _drop_optional_groups(words: list[str]) -> list[str]:
    """``[--a x]`` -> ``--a x``; a group holding a network flag is left out; ``a|b`` -> ``a``."""
    out, group = [], None
    for word in words:
        if group is None and word.startswith("["):
            group, word = [], word[1:]
        if group is not None:
            closing = word.endswith("]")
            group.append(word.removesuffix("]"))
            if closing:
                if not NETWORK_FLAGS & set(group):
                    out += group
                group = None
            continue
        out.append(word)
    return [w.split("|")[0] if "|" in w and not w.startswith("|") else w for w in out]


def unknown_names(command: Command) -> list[str]:
    """Placeholder-looking words (upper case, or example file names) with no stand-in."""
    found = []
    for word in _drop_optional_groups(command.words)[1:]:
        if word.startswith("-") or word in EXAMPLE_FILES or OUTPUT_NAMES.match(word):
            continue
        if re.fullmatch(r"[A-Z][A-Z0-9_]+", word):
            found.append(word)
        elif "." in word and not word.startswith(("recipes/", "genolm/", "tests/", "../")) and "/" not in word:
            found.append(word)
    return found


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_readme_commands_are_found():
    """The parser sees the README's main command, the test command and the CLI commands."""
    texts = [c.text for c in COMMANDS]
    assert any("recipes/pretrain.py" in t and "quickstart.yaml" in t for t in texts)
    assert "bash tests/run.sh" in texts
    for command in ("convert", "info", "data make-task", "embed", "publish", "vep", "ism", "annotate"):
        assert any(t.startswith(f"genolm {command}") for t in texts), command


def test_every_readme_command_is_run_or_skipped_for_a_reason():
    problems = []
    for command in COMMANDS:
        if command.skip_reason:
            continue
        program = command.words[0]
        if program not in ("genolm", "python", "python3", "accelerate"):
            problems.append(f"README.md:{command.line}: {command.text!r}: unknown program {program!r}")
        if unknown_names(command):
            problems.append(f"README.md:{command.line}: {command.text!r}: no stand-in for {unknown_names(command)}")
    assert not problems, "add a stand-in to EXAMPLE_FILES or a reason to SKIPPED:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def project(tmp_path_factory, shared_data):
    """A project folder as on a fresh clone: ``recipes/`` beside ``../shared/data``, with the stand-ins."""
    import numpy as np
    import torch

    from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMForTokenClassification, GenoLMTokenizer
    from genolm.genome import read_records

    root = tmp_path_factory.mktemp("readme")
    (root / "project").mkdir()
    (root / "project" / "recipes").symlink_to(REPO_ROOT / "recipes", target_is_directory=True)
    (root / "shared").symlink_to(shared_data.parent, target_is_directory=True)
    torch.manual_seed(0)
    tokenizer = GenoLMTokenizer()
    for name, model_class, kwargs in (
        ("tiny", GenoLMForMaskedLM, {}),
        ("tiny_tokens", GenoLMForTokenClassification, {"num_labels": 4, "per_nucleotide": True}),
    ):
        model_class(GenoLMConfig.from_preset("tiny", **kwargs)).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    # FASTA + label table example: 60 rice CDS, labelled with their GC fraction
    records = list(read_records(shared_data / "rice_chr2_1mb.cds.fa"))[:60]
    fixtures = root / "fixtures"
    fixtures.mkdir()
    with open(fixtures / "seqs.fa", "w") as fa, open(fixtures / "labels.tsv", "w") as tsv:
        tsv.write("id\tlabel\n")
        for name, seq in records:
            fa.write(f">{name}\n{seq}\n")
            tsv.write(f"{name}\t{np.mean([b in 'GC' for b in seq.upper()]):.4f}\n")
    return root


def concrete(command: Command, root: Path, number: int) -> tuple[list[str], dict[str, str]]:
    """The argv to run (stand-ins filled in, outputs in a fresh folder, fewer steps) and its environment."""
    tmp = root / f"out-{number}"
    tmp.mkdir(exist_ok=True)
    fill = {"tiny": str(root / "tiny"), "tiny_tokens": str(root / "tiny_tokens"), "tmp": str(tmp)}
    words = []
    for word in _drop_optional_groups(command.words):
        if word in EXAMPLE_FILES:
            word = EXAMPLE_FILES[word].format(**fill)
            if word.startswith(str(tmp)) and word.endswith((".fa", ".tsv")):
                word = word.replace(str(tmp), str(root / "fixtures"))
        elif OUTPUT_NAMES.match(word):
            word = str(tmp / word)
        words.append(word)
    program = words.pop(0)
    if program in ("python", "python3"):
        argv = [sys.executable, *words]
    elif program == "genolm":
        argv = [sys.executable, "-m", "genolm", *words]
    else:
        argv = [sys.executable, "-m", "accelerate.commands.accelerate_cli", *words]
    for script, extra in SHORTER.items():
        if script in argv:
            argv += extra
            if "--output_dir" not in argv and script.endswith("finetune.py") and "--config" not in argv:
                argv += ["--output_dir", str(tmp / "run")]
    env = {**os.environ, **command.env, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return argv, env


@pytest.mark.slow
@pytest.mark.parametrize(
    "number, command",
    [
        pytest.param(
            i, c,
            id=f"line{c.line}-{c.words[0]}",
            marks=[pytest.mark.skip(reason=c.skip_reason)] if c.skip_reason else [],
        )
        for i, c in enumerate(COMMANDS)
    ],
)
def test_readme_command_runs(project, number, command):
    argv, env = concrete(command, project, number)
    done = subprocess.run(argv, cwd=project / "project", env=env, capture_output=True, text=True, timeout=900)
    shown = f"README.md:{command.line}: {command.text}\n$ {shlex.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, shown
    output = done.stdout + done.stderr
    assert "Traceback" not in output, shown
    assert "\x1b[" not in output, "raw terminal escape codes in the output\n" + shown
    assert not re.search(r"(Future|Deprecation)Warning", output), shown
    if "quickstart.yaml" in command.text:  # the main command launches without Accelerate's block of defaults
        assert "`--num_processes` was set" not in output, shown
        assert re.search(r"validation perplexity: [\d.]+ before -> [\d.]+ after", done.stdout), shown
        assert "checkpoint: runs/quickstart/checkpoints/step-00000004" in done.stdout, shown
