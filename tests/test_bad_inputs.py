"""Bad input and user mistakes, table-driven: every case runs a real command on real data edited to hold one fault.

For each case of :data:`CASES` the test asserts

* the exit code (2 for a user's mistake, 1 for a full disk),
* exactly one ``error:`` line on stderr, no traceback, and a message matching the case's regular expression, which
  names the file and the line / record / field and what is wrong,
* every input unchanged (sha256 of files and folders before and after),
* nothing at the final output path that looks complete (absent, or a folder that existed before with its content
  unchanged) and no ``.genolm-tmp*`` leftovers.

:data:`ACCEPTED` holds the inputs that are accepted with a warning: exit 0 and every record written.

CLI commands run in-process through :func:`genolm.cli.main`; the recipes run in-process the way ``python
recipes/X.py`` runs them (``runpy`` with ``__main__``, the user-error reporter included), and two of them as real
subprocesses.

The failures originally observed (numbered as reported), and the cases that now guard them:

1. ``vep --out X --vcf X`` destroyed a 3,078-record VCF, exit 0: ``vcf_output_is_input``.
2. ``convert genolm-to-esm X X`` overwrote the source: ``convert_same_folder``, ``convert_into_source_subfolder``.
3. a second pretraining run into a used folder pruned the first run's checkpoints and overwrote its log; two runs
   deleted each other's temporary checkpoint: ``pretrain_into_another_run``, ``pretrain_into_locked_folder``.
4. vep crashed writing a VCF with a symbolic ALT, undeclared INFO/FILTER, or plain-gzip input: the ACCEPTED table
   (``vcf_symbolic_alt``, ``vcf_undeclared_info_filter``, ``vcf_plain_gzip``).
5. a FASTA edited after its .fai gave REF bases from wrong offsets: ``fasta_stale_fai_vep`` (and
   ``tests/test_genome_io.py`` for ism and annotate).
6. ``--lr 1e6`` saved NaN checkpoints, exit 0: ``pretrain_lr_diverges`` (a tampered ``training_state.pt``:
   ``tests/test_pretrain.py::test_altered_checkpoint_is_refused_by_its_hash``).
7. a ``model_overrides`` typo trained silently: ``config_model_overrides_typo_pretrain``.
8. vep/ism accepted a BERT masked-LM folder: ``ckpt_bert_vep``, ``ckpt_bert_ism``.
9. truncated or header-only files left at the final path after an error or a full disk: ``full_disk_vep``,
   ``full_disk_embed``, and the output check of every case.
10. fine-tuning accepted labels {0, 1, 2.5, 'yes'} and a single class: ``table_mixed_labels``,
    ``table_single_class``.
11. user errors ending in tracebacks: ``config_*`` (YAML syntax, unknown key, ``max_steps -5``, ``batch_size 0``),
    ``pretrain_missing_source_fasta``, ``ckpt_corrupt_safetensors_*``, ``ckpt_vocab_size_mismatch_vep``,
    ``output_under_a_file_vep``, ``table_empty_csv``, ``fasta_non_utf8_header_embed``.
Bad FASTA accepted silently by embed, make-task, vep, ism and annotate: the ``fasta_*`` cases.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO_ROOT, SHARED_DATA, write_fasta

pytestmark = pytest.mark.usefixtures("one_thread")

CHLOROPLAST = "NC_000932.1"
PGB_POLYA = Path("pgb") / "poly_a.arabidopsis_thaliana" / "train.csv"
FAST_VEP = ["--window-tokens", "8", "--quiet"]
FAST_EMBED = ["--max-tokens", "32", "--quiet"]
FAST_FINETUNE = ["--model", "preset:tiny", "--max_steps", "2", "--batch_size", "4", "--max_length", "16",
                 "--mixed_precision", "no", "--report_to", "none"]


# ----------------------------------------------------------------------------------------------------------
# building blocks: real data edited to hold one fault
# ----------------------------------------------------------------------------------------------------------
def chloroplast_seq(start: int = 0, length: int = 600) -> str:
    lines = (SHARED_DATA / "athaliana_chloroplast.fa").read_text().splitlines()[1:]
    return "".join(lines)[start : start + length]


def fasta_text(records: dict[str, str]) -> str:
    """FASTA with 60-column lines: record ``a`` of 180 bp takes lines 2-4."""
    out = []
    for name, seq in records.items():
        out.append(f">{name}\n")
        out.extend(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    return "".join(out)


def two_records() -> dict[str, str]:
    return {"rec1": chloroplast_seq(0, 180), "rec2": chloroplast_seq(5000, 180)}


def bad_fasta(w: Path, name: str, edit: Callable[[str], str] | None = None, *, raw: bytes | None = None) -> str:
    """Two real 180-bp records (lines 1-4 and 5-8), with ``edit`` applied to the text."""
    path = w / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(edit(fasta_text(two_records())) if edit else fasta_text(two_records()))
    return str(path)


def replace_line(text: str, number: int, new: Callable[[str], str]) -> str:
    """``text`` with line ``number`` (1-based) replaced by ``new(line)``."""
    lines = text.split("\n")
    lines[number - 1] = new(lines[number - 1])
    return "\n".join(lines)


def put_char(line_number: int, column: int, char: str) -> Callable[[str], str]:
    return lambda text: replace_line(text, line_number, lambda line: line[: column - 1] + char + line[column:])


def copy_shared(w: Path, name: str, dest: str | None = None) -> str:
    target = w / (dest or name)
    shutil.copyfile(SHARED_DATA / name, target)
    return str(target)


def edited_gff3(w: Path, line_number: int, edit: Callable[[str], str], *, encoding_error: bool = False) -> str:
    """The chloroplast GFF3 with line ``line_number`` (1-based) edited."""
    text = (SHARED_DATA / "athaliana_chloroplast.gff3").read_text()
    path = w / "bad.gff3"
    data = replace_line(text, line_number, edit).encode()
    if encoding_error:
        data = data.replace(b"gene_biotype", b"gene_\xffbiotype", 1)
    path.write_bytes(data)
    return str(path)


def first_feature_line(kind: str = "gene") -> int:
    if not (SHARED_DATA / "athaliana_chloroplast.gff3").exists():
        return 0  # the cases are skipped (fixture shared_data)
    for number, line in enumerate((SHARED_DATA / "athaliana_chloroplast.gff3").read_text().split("\n"), 1):
        if not line.startswith("#") and line.count("\t") == 8 and line.split("\t")[2] == kind:
            return number
    raise AssertionError(kind)


def vcf_with(w: Path, name: str, edit: Callable[[list[str]], list[str]]) -> str:
    """The chloroplast VCF with its lines edited by ``edit``."""
    lines = (SHARED_DATA / "athaliana_chloroplast.vcf").read_text().splitlines()
    path = w / name
    path.write_text("\n".join(edit(lines)) + "\n")
    return str(path)


def first_record(lines: list[str]) -> int:
    """0-based index of the first record line."""
    return next(i for i, line in enumerate(lines) if not line.startswith("#"))


def set_field(lines: list[str], record: int, column: int, value: str) -> list[str]:
    """``lines`` with column ``column`` (0-based) of record ``record`` (0-based) set to ``value``."""
    index = first_record(lines) + record
    fields = lines[index].split("\t")
    fields[column] = value
    lines[index] = "\t".join(fields)
    return lines


def snv_vcf_3078(w: Path) -> str:
    """3,078 real SNVs: every chloroplast base from 1,001 to 4,078 changed to the next base of ACGT."""
    seq = chloroplast_seq(0, 4078)
    header = [line for line in (SHARED_DATA / "athaliana_chloroplast.vcf").read_text().splitlines()
              if line.startswith("##fileformat") or line.startswith("##contig")]
    header.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    records = [f"{CHLOROPLAST}\t{pos}\t.\t{seq[pos - 1]}\t{'ACGT'['ACGT'.index(seq[pos - 1]) - 3]}\t.\tPASS\t."
               for pos in range(1001, 4079)]
    path = w / "variants.vcf"
    path.write_text("\n".join(header + records) + "\n")
    return str(path)


def table(w: Path, name: str, labels: list, *, sequences: list[str] | None = None, header: bool = True) -> str:
    """A fine-tuning CSV of real PGB poly-A sequences (60 bp) with the given labels."""
    import pandas as pd

    source = pd.read_csv(SHARED_DATA / PGB_POLYA, nrows=len(labels))
    frame = pd.DataFrame({"sequence": sequences or [s[:60] for s in source["sequence"]], "label": labels})
    path = w / name
    if header:
        frame.to_csv(path, index=False)
    else:
        path.write_text("")
    return str(path)


def pretrain_config(w: Path, sources: list[str], **extra: str) -> str:
    """recipes/configs/debug.yaml with these sources, written beside the case."""
    text = (REPO_ROOT / "recipes" / "configs" / "debug.yaml").read_text()
    text += "sources:\n" + "".join(f"  - {s}\n" for s in sources)
    text += "".join(f"{key}: {value}\n" for key, value in extra.items())
    path = w / "pretrain.yaml"
    path.write_text(text)
    return str(path)


def corrupt_weights(w: Path, model: Path, name: str = "model") -> str:
    """A copy of the tiny checkpoint whose model.safetensors is cut to half its size."""
    target = w / name
    shutil.copytree(model, target)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return str(target)


def without_weights(w: Path, model: Path) -> str:
    target = w / "model"
    shutil.copytree(model, target)
    (target / "model.safetensors").unlink()
    return str(target)


def vocab_mismatch(w: Path, model: Path) -> str:
    """A tiny masked LM of a 4,000-token vocabulary saved with the 4,105-token NT tokenizer."""
    from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMTokenizer

    target = w / "model"
    GenoLMForMaskedLM(GenoLMConfig.from_preset("tiny", vocab_size=4000)).save_pretrained(target)
    GenoLMTokenizer.from_pretrained(model).save_pretrained(target)
    return str(target)


# ----------------------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One mistake: ``build(workdir, ctx)`` writes the faulty inputs and returns the command line.

    ``inputs`` and ``outputs`` are paths relative to the case's folder: inputs (files or folders, an output
    folder that existed before included) must keep their sha256; outputs must not exist afterwards.
    """

    name: str
    build: Callable[[Path, dict], list[str]]
    message: str  # regular expression searched in the one error line
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    exit_code: int = 2
    recipe: str | None = None  # "pretrain" / "finetune": the argv goes to recipes/<recipe>.py
    as_process: bool = False  # run as a real process (recipes)
    lock: str | None = None  # hold genolm.outputs.run_lock on this folder while the command runs
    full_disk: str | None = None  # mount a full tmpfs here before the command
    check: Callable[[Path, str], None] | None = None  # further checks: (workdir, error line)


def vep(model: str, fasta: str, vcf: str, out: str) -> list[str]:
    return ["vep", "--model", model, "--fasta", fasta, "--vcf", vcf, "--out", out, *FAST_VEP]


def ism(model: str, fasta: str, out: str, region: str = f"{CHLOROPLAST}:1001-1012", *extra: str) -> list[str]:
    return ["ism", "--model", model, "--fasta", fasta, "--region", region, "--out", out, "--window-tokens", "8",
            "--quiet", *extra]


def embed(model: str, fasta: str, out: str, *extra: str) -> list[str]:
    return ["embed", "--model", model, "--fasta", fasta, "--out", out, *FAST_EMBED, *extra]


def annotate(model: str, fasta: str, out: str) -> list[str]:
    return ["annotate", "--model", model, "--fasta", fasta, "--out", out, "--window-tokens", "12", "--quiet"]


def make_task(fasta: str, gff3: str, out: str, *extra: str) -> list[str]:
    return ["data", "make-task", "--fasta", fasta, "--gff3", gff3, "--task", "promoters", out, *extra]


CHLORO = str(SHARED_DATA / "athaliana_chloroplast.fa")
CHLORO_VCF = str(SHARED_DATA / "athaliana_chloroplast.vcf")
CHLORO_GFF3 = str(SHARED_DATA / "athaliana_chloroplast.gff3")
GENE_LINE = first_feature_line("gene")


def check_no_checkpoint_after_divergence(w: Path, line: str) -> None:
    """Checkpoints left are of steps before the one named in the message, and hold finite weights only."""
    import torch
    from safetensors.torch import load_file

    step = int(re.search(r"step (\d+)", line).group(1))
    checkpoints = sorted((w / "run" / "checkpoints").glob("step-*"))
    assert checkpoints, "the good checkpoint of step 1 was lost"
    for checkpoint in checkpoints:
        assert int(checkpoint.name.split("-")[1]) < step, checkpoint
        for name, tensor in load_file(checkpoint / "model.safetensors").items():
            assert torch.isfinite(tensor).all(), (checkpoint, name)


BERT_REFUSED = (r"bert\d*: model type 'bert' with a 13-token WordPiece vocabulary is not a nucleotide k-mer model; "
                r"this command needs a genolm or Nucleotide Transformer \(ESM\) checkpoint")

CASES: list[Case] = [
    # --- FASTA: one reader, one validation, whichever command reads it -------------------------------------
    Case("fasta_star_embed",
         lambda w, c: embed(c["model"], bad_fasta(w, "bad.fa", put_char(3, 7, "*")), str(w / "out.npz")),
         r"bad\.fa: line 3, column 7: invalid character '\*' in sequence", inputs=("bad.fa",), outputs=("out.npz",)),
    Case("fasta_digits_vep",
         lambda w, c: vep(c["model"], bad_fasta(w, "bad.fa", put_char(6, 12, "7")), CHLORO_VCF, str(w / "out.vcf")),
         r"bad\.fa: line 6, column 12: invalid character '7' in sequence", inputs=("bad.fa",), outputs=("out.vcf",)),
    Case("fasta_duplicate_ids_ism",
         lambda w, c: ism(c["model"], bad_fasta(w, "bad.fa", lambda t: t.replace(">rec2", ">rec1")),
                          str(w / "out.tsv"), "rec1:1-12"),
         r"bad\.fa: line 5: duplicate sequence id 'rec1' \(first defined at line 1\)", inputs=("bad.fa",), outputs=("out.tsv",)),
    Case("fasta_empty_record_annotate",
         lambda w, c: annotate(c["annotator"], bad_fasta(w, "bad.fa", lambda t: ">empty\n" + t), str(w / "out.gff3")),
         r"bad\.fa: line 1: empty sequence for record 'empty'", inputs=("bad.fa",), outputs=("out.gff3",)),
    Case("fasta_missing_header_make_task",
         lambda w, c: make_task(bad_fasta(w, "bad.fa", lambda t: "ACGT\n" + t), CHLORO_GFF3, str(w / "task")),
         r"bad\.fa: line 1: missing '>' header: the file starts with 'ACGT'", inputs=("bad.fa",), outputs=("task",)),
    Case("fasta_truncated_gzip_prepare",
         lambda w, c: ["data", "prepare",
                       bad_fasta(w, "bad.fa.gz", raw=gzip.compress(fasta_text(two_records()).encode())[:-40]),
                       str(w / "shards"), "--max-tokens", "32", "--num-shards", "1"],
         r"bad\.fa\.gz: truncated gzip stream: compressed data ends at byte offset \d+", inputs=("bad.fa.gz",), outputs=("shards",)),
    Case("fasta_non_utf8_header_embed",
         lambda w, c: embed(c["model"], bad_fasta(w, "bad.fa", raw=fasta_text(two_records()).encode()
                                                  .replace(b">rec2", b">rec\xe92")), str(w / "out.parquet")),
         r"bad\.fa: line 5, column 5: header is not UTF-8 text \(byte 0xe9\)", inputs=("bad.fa",), outputs=("out.parquet",)),
    Case("fasta_missing_file_vep",
         lambda w, c: vep(c["model"], str(w / "missing.fa"), CHLORO_VCF, str(w / "out.vcf")),
         r"missing\.fa: FASTA file not found", outputs=("out.vcf",)),
    Case("fasta_star_pretrain_sources",
         lambda w, c: ["--config", pretrain_config(w, [bad_fasta(w, "bad.fa", put_char(7, 30, "*"))]),
                       "--output_dir", str(w / "run")],
         r"bad\.fa: line 7, column 30: invalid character '\*' in sequence", inputs=("bad.fa",), outputs=("run",), recipe="pretrain"),
    Case("fasta_stale_fai_vep",
         lambda w, c: vep(c["model"], stale_fai_fasta(w), CHLORO_VCF, str(w / "out.vcf")),
         r"readonly/genome\.fa: stale index .*readonly/genome\.fa\.fai .*modified after.* the folder is not writable", inputs=("genome.fa", "genome.fa.fai"),
         outputs=("out.vcf",)),
    # --- VCF -------------------------------------------------------------------------------------------------
    Case("vcf_output_is_input",
         lambda w, c: vep(c["model"], CHLORO, snv_vcf_3078(w), str(w / "variants.vcf")),
         r"--out .*variants\.vcf is also the input --vcf .*variants\.vcf", inputs=("variants.vcf",)),
    Case("vcf_malformed_pos",
         lambda w, c: vep(c["model"], CHLORO, vcf_with(w, "bad.vcf", lambda ls: set_field(ls, 2, 1, "41x7")),
                          str(w / "out.vcf")),
         r"bad\.vcf:43: POS '41x7' is not a non-negative integer", inputs=("bad.vcf",), outputs=("out.vcf",)),
    Case("vcf_contig_absent_from_fasta",
         lambda w, c: vep(c["model"], bad_fasta(w, "genome.fa"), CHLORO_VCF, str(w / "out.vcf")),
         rf"athaliana_chloroplast\.vcf: no record's contig is a sequence of .*genome\.fa \(VCF contigs: {CHLOROPLAST}; FASTA records: rec1, rec2\)", inputs=("genome.fa",),
         outputs=("out.vcf",)),
    # --- GFF3 ------------------------------------------------------------------------------------------------
    Case("gff3_8_columns_make_task",
         lambda w, c: make_task(CHLORO, edited_gff3(w, GENE_LINE, lambda line: line.rsplit("\t", 1)[0]), str(w / "task")),
         rf"bad\.gff3:{GENE_LINE}: expected 9 tab-separated columns, found 8", inputs=("bad.gff3",), outputs=("task",)),
    Case("gff3_start_after_end_make_task",
         lambda w, c: make_task(CHLORO, edited_gff3(w, GENE_LINE, swap_start_end), str(w / "task")),
         rf"bad\.gff3:{GENE_LINE}: invalid interval \d+\.\.\d+ \(GFF3 is 1-based, start <= end\)", inputs=("bad.gff3",), outputs=("task",)),
    Case("gff3_non_integer_start_ism",
         lambda w, c: ism(c["model"], CHLORO, str(w / "out.tsv"), f"{CHLOROPLAST}:1001-1012", "--gff3",
                          edited_gff3(w, GENE_LINE, lambda line: set_column(line, 3, "12a"))),
         rf"bad\.gff3:{GENE_LINE}:.*start.*'12a'", inputs=("bad.gff3",), outputs=("out.tsv",)),
    Case("gff3_bad_attribute_make_task",
         lambda w, c: make_task(CHLORO, edited_gff3(w, GENE_LINE, lambda line: set_column(line, 8, "ID=gene-x;Name")),
                                str(w / "task")),
         rf"bad\.gff3:{GENE_LINE}: attribute 'Name' is not tag=value", inputs=("bad.gff3",), outputs=("task",)),
    Case("gff3_non_utf8_ism",
         lambda w, c: ism(c["model"], CHLORO, str(w / "out.tsv"), f"{CHLOROPLAST}:1001-1012", "--gff3",
                          edited_gff3(w, 1, lambda line: line, encoding_error=True)),
         r"bad\.gff3: line \d+, column \d+: not UTF-8 text", inputs=("bad.gff3",), outputs=("out.tsv",)),
    # --- checkpoints -----------------------------------------------------------------------------------------
    Case("ckpt_bert_vep",
         lambda w, c: vep(c["bert"], CHLORO, CHLORO_VCF, str(w / "out.vcf")),
         BERT_REFUSED, outputs=("out.vcf",)),
    Case("ckpt_bert_ism",
         lambda w, c: ism(c["bert"], CHLORO, str(w / "out.tsv")),
         BERT_REFUSED, outputs=("out.tsv",)),
    Case("ckpt_corrupt_safetensors_info",
         lambda w, c: ["info", corrupt_weights(w, c["model"])],
         r"model/model\.safetensors: not a readable safetensors file \(.*incomplete metadata", inputs=("model",)),
    Case("ckpt_corrupt_safetensors_convert",
         lambda w, c: ["convert", "genolm-to-esm", corrupt_weights(w, c["model"]), str(w / "esm")],
         r"model/model\.safetensors: not a readable safetensors file \(.*incomplete metadata", inputs=("model",),
         outputs=("esm",)),
    Case("ckpt_corrupt_safetensors_vep",
         lambda w, c: vep(corrupt_weights(w, c["model"]), CHLORO, CHLORO_VCF, str(w / "out.vcf")),
         r"model/model\.safetensors: cannot read the weights \(corrupt or truncated safetensors file\)",
         inputs=("model",), outputs=("out.vcf",)),
    Case("ckpt_no_weights_embed",
         lambda w, c: embed(without_weights(w, c["model"]), bad_fasta(w, "seqs.fa"), str(w / "out.npz")),
         r"/model: no weights file \(model\.safetensors\) in the checkpoint folder", inputs=("model", "seqs.fa"), outputs=("out.npz",)),
    Case("ckpt_vocab_size_mismatch_vep",
         lambda w, c: vep(vocab_mismatch(w, c["model"]), CHLORO, CHLORO_VCF, str(w / "out.vcf")),
         r"/model: the model has a 4000-token vocabulary but the tokenizer has 4107 tokens", inputs=("model",), outputs=("out.vcf",)),
    Case("convert_same_folder",
         lambda w, c: ["convert", "genolm-to-esm", copy_model(w, c), str(w / "model")],
         r"output folder dst .*/model is also the input src .*/model; choose another", inputs=("model",)),
    Case("convert_into_source_subfolder",
         lambda w, c: ["convert", "genolm-to-esm", copy_model(w, c), str(w / "model" / "esm")],
         r"output folder dst .*/model/esm lies inside the input folder src .*/model$", inputs=("model",), outputs=("model/esm",)),
    Case("ckpt_hub_id_offline_embed",
         lambda w, c: embed("nobody-here/no-such-model", bad_fasta(w, "seqs.fa"), str(w / "out.npz")),
         r"model 'nobody-here/no-such-model': not in the local Hugging Face cache, and the Hub cannot be reached", inputs=("seqs.fa",),
         outputs=("out.npz",)),
    # --- configs of the recipes --------------------------------------------------------------------------------
    Case("config_yaml_syntax_pretrain",
         lambda w, c: ["--config", write(w / "broken.yaml", "max_steps: 3\nlr: [1e-4\n"), "--output_dir",
                       str(w / "run")],
         r"broken\.yaml:3:1: invalid YAML", inputs=("broken.yaml",), outputs=("run",), recipe="pretrain",
         as_process=True),
    Case("config_unknown_key_finetune",
         lambda w, c: ["--config", write(w / "unknown.yaml", "max_stepz: 3\n"), "--train",
                       table(w, "t.csv", [0, 1] * 8), "--output_dir", str(w / "run")],
         r"unknown\.yaml: unknown FinetuneConfig field 'max_stepz' \(did you mean 'max_steps'\?\)",
         inputs=("unknown.yaml", "t.csv"), outputs=("run",), recipe="finetune"),
    Case("config_max_steps_negative_pretrain",
         lambda w, c: ["--config", str(REPO_ROOT / "recipes/configs/debug.yaml"), "--max_steps", "-5",
                       "--output_dir", str(w / "run")],
         r"^pretrain\.py: error: max_steps must be >= 1, got -5$", outputs=("run",), recipe="pretrain"),
    Case("config_batch_size_zero_finetune",
         lambda w, c: ["--train", table(w, "t.csv", [0, 1] * 8), *FAST_FINETUNE, "--batch_size", "0",
                       "--output_dir", str(w / "run")],
         r"^finetune\.py: error: batch_size must be >= 1, got 0$", inputs=("t.csv",), outputs=("run",), recipe="finetune",
         as_process=True),
    Case("config_model_overrides_typo_pretrain",
         lambda w, c: ["--config", str(REPO_ROOT / "recipes/configs/debug.yaml"), "--model_overrides.num_hiden_layers",
                       "3", "--output_dir", str(w / "run")],
         r"model_overrides: 'num_hiden_layers' is not a GenoLMConfig field; did you mean 'num_hidden_layers'\?", outputs=("run",),
         recipe="pretrain"),
    Case("pretrain_lr_diverges",
         lambda w, c: ["--config", str(REPO_ROOT / "recipes/configs/debug.yaml"), "--lr", "1e6", "--init_lr", "1e6",
                       "--max_steps", "4", "--checkpoint_every", "1", "--keep_checkpoints", "5", "--eval_batches", "1",
                       "--output_dir", str(w / "run")],
         r"training diverged at step \d+: loss nan, gradient norm nan; try a lower --lr \(now 1e\+06\)", recipe="pretrain",
         check=check_no_checkpoint_after_divergence),
    Case("pretrain_missing_source_fasta",
         lambda w, c: ["--config", pretrain_config(w, [str(w / "missing.fa")]), "--output_dir", str(w / "run")],
         r"missing\.fa: no such file or directory", inputs=("pretrain.yaml",), outputs=("run",),
         recipe="pretrain"),
    # --- fine-tuning tables ---------------------------------------------------------------------------------
    Case("table_empty_csv",
         lambda w, c: ["--train", table(w, "t.csv", [], header=False), *FAST_FINETUNE, "--output_dir", str(w / "run")],
         r"t\.csv: empty table \(no header, no rows\)", inputs=("t.csv",), outputs=("run",), recipe="finetune"),
    Case("table_mixed_labels",
         lambda w, c: ["--train", table(w, "t.csv", [0, 1, 2.5, "yes"] * 4), *FAST_FINETUNE, "--output_dir",
                       str(w / "run")],
         r"t\.csv: line 4 \(id '2'\), column 'label': label '2\.5' is not a class", inputs=("t.csv",), outputs=("run",), recipe="finetune"),
    Case("table_single_class",
         lambda w, c: ["--train", table(w, "t.csv", [1] * 16), *FAST_FINETUNE, "--output_dir", str(w / "run")],
         r"t\.csv \(train part\): the training labels hold one class only \(1\); classification needs at least two", inputs=("t.csv",), outputs=("run",),
         recipe="finetune"),
    Case("table_invalid_sequence_character",
         lambda w, c: ["--train", table(w, "t.csv", [0, 1] * 8, sequences=bad_sequences()), *FAST_FINETUNE,
                       "--output_dir", str(w / "run")],
         r"t\.csv: line 5 \(id '3'\): invalid character '\*' at position 21 of the sequence", inputs=("t.csv",), outputs=("run",), recipe="finetune"),
    Case("table_regression_non_numeric",
         lambda w, c: ["--train", table(w, "t.csv", ["0.5", "1.5", "high", "2.0"] * 4), *FAST_FINETUNE, "--task",
                       "regression", "--output_dir", str(w / "run")],
         r"t\.csv: line 4 \(id '2'\), column 'label': expected a number or a list of numbers, got 'high'", inputs=("t.csv",), outputs=("run",), recipe="finetune"),
    # --- output paths ------------------------------------------------------------------------------------------
    Case("output_under_a_file_vep",
         lambda w, c: vep(c["model"], CHLORO, CHLORO_VCF, str(Path(write(w / "afile", "x\n")) / "out.vcf")),
         r"--out .*/afile/out\.vcf: .*/afile is a file, not a folder", inputs=("afile",)),
    Case("output_is_input_embed",
         lambda w, c: embed(c["model"], bad_fasta(w, "seqs.npz"), str(w / "seqs.npz")),
         r"--out .*seqs\.npz is also the input --fasta .*seqs\.npz", inputs=("seqs.npz",)),
    Case("output_is_input_ism",
         lambda w, c: ism(c["model"], copy_shared(w, "athaliana_chloroplast.fa", "genome.fa"), str(w / "genome.fa")),
         r"--out .*genome\.fa is also the input --fasta .*genome\.fa", inputs=("genome.fa",)),
    Case("output_is_input_annotate",
         lambda w, c: annotate(c["annotator"], bad_fasta(w, "seqs.fa"), str(w / "seqs.fa")),
         r"--out .*seqs\.fa is also the input --fasta .*seqs\.fa", inputs=("seqs.fa",)),
    Case("make_task_into_non_empty_folder",
         lambda w, c: make_task(CHLORO, CHLORO_GFF3, write_in(w / "task", "notes.txt", "mine\n")),
         r"output folder out_dir .*/task exists and is not empty; choose another folder or pass --overwrite", inputs=("task",)),
    Case("pretrain_into_another_run",
         lambda w, c: ["--config", str(REPO_ROOT / "recipes/configs/debug.yaml"), "--max_steps", "1",
                       "--output_dir", write_in(w / "run", "log.jsonl", '{"step": 1, "loss": 8.3}\n')],
         r"output_dir .*/run holds another run \(log\.jsonl\); pass --resume to continue it, --overwrite to replace it", inputs=("run",), recipe="pretrain"),
    Case("pretrain_into_locked_folder",
         lambda w, c: ["--config", str(REPO_ROOT / "recipes/configs/debug.yaml"), "--max_steps", "1",
                       "--output_dir", str(w / "locked")],
         rf"/locked is in use by another run \(host .*, pid {os.getpid()}, started .*; lock file .*/locked/\.genolm\.lock\)", recipe="pretrain", lock="locked"),
    # --- a full disk -------------------------------------------------------------------------------------------
    Case("full_disk_vep",
         lambda w, c: vep(c["model"], CHLORO, CHLORO_VCF, str(w / "disk" / "out.vcf")),
         r"no space left on the device writing .*/disk/out\.vcf; nothing was left at the output path", inputs=("disk",), outputs=("disk/out.vcf",), exit_code=1,
         full_disk="disk"),
    Case("full_disk_embed",
         lambda w, c: embed(c["model"], bad_fasta(w, "seqs.fa"), str(w / "disk" / "out.npz"), "--pool", "none"),
         r"no space left on the device writing .*/disk/out\.npz; nothing was left at the output path",
         inputs=("disk", "seqs.fa"), outputs=("disk/out.npz",), exit_code=1,
         full_disk="disk"),
]


# helpers the table refers to (kept below it so the table reads first)
def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def write_in(folder: Path, name: str, text: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return str(folder)


def copy_model(w: Path, c: dict) -> str:
    shutil.copytree(c["model"], w / "model")
    return str(w / "model")


def set_column(line: str, column: int, value: str) -> str:
    """``line`` with GFF3 column ``column`` (0-based) set to ``value``."""
    fields = line.split("\t")
    fields[column] = value
    return "\t".join(fields)


def swap_start_end(line: str) -> str:
    fields = line.split("\t")
    fields[3], fields[4] = fields[4], fields[3]
    return "\t".join(fields)


def bad_sequences() -> list[str]:
    sequences = [chloroplast_seq(600 * i, 60) for i in range(16)]
    sequences[3] = sequences[3][:20] + "*" + sequences[3][21:]
    return sequences


def stale_fai_fasta(w: Path) -> str:
    """A FASTA edited (20 bases removed from record 1) after its .fai was written, in a read-only folder."""
    folder = w / "ro"
    folder.mkdir()
    write_fasta(folder / "genome.fa", {CHLOROPLAST: chloroplast_seq(0, 6000)})
    import pysam

    pysam.faidx(str(folder / "genome.fa"))
    write_fasta(folder / "genome.fa", {CHLOROPLAST: chloroplast_seq(0, 1000) + chloroplast_seq(1020, 4980)})
    for name in ("genome.fa", "genome.fa.fai"):
        os.link(folder / name, w / name)  # the inputs checked are the same files
    read_only = w / "readonly"
    read_only.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(read_only)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a read-only bind mount is not possible here: {mounted.stderr.decode().strip()}")
    remounted = subprocess.run(["mount", "-o", "remount,ro,bind", str(read_only)], capture_output=True)
    if remounted.returncode != 0 or _writable(read_only):
        subprocess.run(["umount", str(read_only)], check=False)
        pytest.skip("the bind mount stays writable here")
    MOUNTS.append(read_only)
    return str(read_only / "genome.fa")


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


ACCEPTED: list[Case] = [
    Case("vcf_undeclared_info_filter",
         lambda w, c: vep(c["model"], CHLORO, vcf_with(w, "in.vcf", lambda ls: set_field(
             set_field(ls, 0, 7, "AC=2;XNEW=7"), 1, 6, "NotDeclared")), str(w / "out.vcf")),
         r"", inputs=("in.vcf",), exit_code=0),
    Case("vcf_symbolic_alt",
         lambda w, c: vep(c["model"], CHLORO, vcf_with(w, "in.vcf", lambda ls: set_field(ls, 3, 4, "<DEL>")),
                          str(w / "out.vcf")),
         r"", inputs=("in.vcf",), exit_code=0),
    Case("vcf_plain_gzip",
         lambda w, c: vep(c["model"], CHLORO, plain_gzip_vcf(w), str(w / "out.vcf")),
         r"", inputs=("in.vcf.gz",), exit_code=0),
]


def plain_gzip_vcf(w: Path) -> str:
    path = w / "in.vcf.gz"
    path.write_bytes(gzip.compress((SHARED_DATA / "athaliana_chloroplast.vcf").read_bytes()))
    return str(path)


MOUNTS: list[Path] = []  # read-only bind mounts made by a case, undone when it ends


def unmount_all() -> None:
    while MOUNTS:
        subprocess.run(["umount", str(MOUNTS.pop())], check=False)


# ----------------------------------------------------------------------------------------------------------
# running a case
# ----------------------------------------------------------------------------------------------------------
def sha256_tree(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_dir():
        for sub in sorted(path.rglob("*")):
            digest.update(str(sub.relative_to(path)).encode())
            if sub.is_file():
                digest.update(sub.read_bytes())
    elif path.exists():
        digest.update(path.read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def full_tmpfs(folder: Path) -> Iterator[None]:
    """A 128 KiB tmpfs at ``folder``, filled but for a few KiB by a file of the user's."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (folder / "filler.bin").write_bytes(b"\0" * (128 - 8) * 1024)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    from genolm.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def run_recipe(recipe: str, argv: list[str], capsys) -> tuple[int, str]:
    """``python recipes/RECIPE.py ARGV`` in this process: its ``__main__`` block, user-error reporter included."""
    script = REPO_ROOT / "recipes" / f"{recipe}.py"
    saved = sys.argv
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    finally:
        sys.argv = saved
    return code, capsys.readouterr().err


def run_subprocess(recipe: str, argv: list[str]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "recipes" / f"{recipe}.py"), *argv], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stderr


@pytest.fixture(scope="module")
def ctx(tiny_mlm_dir, tokenizer, shared_data, tmp_path_factory) -> dict:
    """The checkpoints every case may use: the tiny masked LM, a tiny annotator, a tiny BERT masked LM."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    from genolm import GenoLMConfig, GenoLMForTokenClassification

    torch.manual_seed(0)
    annotator = tmp_path_factory.mktemp("annotator")
    labels = ["intergenic", "exon"]
    GenoLMForTokenClassification(GenoLMConfig.from_preset(
        "tiny", per_nucleotide=True, num_labels=2, id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)})).save_pretrained(annotator)
    tokenizer.save_pretrained(annotator)

    bert = tmp_path_factory.mktemp("bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "c", "g", "t", "##a", "##c", "##g", "##t"]
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(bert / "vocab.txt")).save_pretrained(bert)
    BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64)).save_pretrained(bert)
    return {"model": str(tiny_mlm_dir), "annotator": str(annotator), "bert": str(bert)}


def run_case(case: Case, w: Path, ctx: dict, capsys) -> tuple[int, str, dict[str, str]]:
    with contextlib.ExitStack() as stack:
        stack.callback(unmount_all)
        if case.full_disk:
            stack.enter_context(full_tmpfs(w / case.full_disk))
        argv = case.build(w, ctx)
        before = {name: sha256_tree(w / name) for name in case.inputs}
        assert all((w / name).exists() for name in case.inputs), case.inputs
        if case.lock:
            from genolm.outputs import run_lock

            stack.enter_context(run_lock(w / case.lock))
            before[case.lock] = sha256_tree(w / case.lock)
        capsys.readouterr()
        if case.recipe and case.as_process:
            code, err = run_subprocess(case.recipe, argv)
        elif case.recipe:
            code, err = run_recipe(case.recipe, argv, capsys)
        else:
            code, err = run_cli(argv, capsys)
        after = {name: sha256_tree(w / name) for name in before}
    assert after == before, f"inputs changed: {[n for n in before if before[n] != after[n]]}"
    return code, err, after


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case: Case, tmp_path: Path, ctx: dict, capsys):
    code, err, _ = run_case(case, tmp_path, ctx, capsys)
    assert "Traceback" not in err, err[-3000:]
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1, err[-3000:]
    assert code == case.exit_code, err[-3000:]
    assert re.match(r"(genolm [a-z -]+|pretrain\.py|finetune\.py): error: ", error_lines[0]), error_lines[0]
    assert re.search(case.message, error_lines[0]), f"{case.message!r} not in {error_lines[0]!r}"
    for name in case.outputs:
        assert not (tmp_path / name).exists(), f"{name} was left behind"
    leftovers = [str(p) for p in tmp_path.rglob("*") if p.name.startswith(".genolm-tmp")]
    assert not leftovers, leftovers
    if case.check:
        case.check(tmp_path, error_lines[0])


@pytest.mark.parametrize("case", ACCEPTED, ids=[case.name for case in ACCEPTED])
def test_accepted_input(case: Case, tmp_path: Path, ctx: dict, capsys):
    import pysam

    code, err, _ = run_case(case, tmp_path, ctx, capsys)
    assert code == 0 and "Traceback" not in err and "error:" not in err, err[-3000:]
    source_vcf = tmp_path / case.inputs[0]
    if source_vcf.suffix == ".gz":
        source_vcf = SHARED_DATA / "athaliana_chloroplast.vcf"
    with pysam.VariantFile(str(source_vcf)) as source:
        expected = [(r.chrom, r.pos, r.ref, r.alts) for r in source]
    with pysam.VariantFile(str(tmp_path / "out.vcf")) as written:
        got = [(r.chrom, r.pos, r.ref, r.alts) for r in written]
    assert got == expected and len(got) == 83
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".genolm-tmp")]


def test_table_is_large_enough():
    names = [case.name for case in CASES + ACCEPTED]
    assert len(CASES) >= 45 and len(names) == len(set(names))
