"""Pre-tokenised Parquet/Arrow shards: written once, streamed back identical to the on-the-fly windows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from genolm.cli import build_parser
from genolm.data import GenomeDataError, genome_dataset, prepare_shards

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_MANIFEST = REPO / "recipes" / "data" / "example_3_species.tsv"
OPTIONS = {"block_size": 100_000, "num_shards": 4, "validation_fraction": 0.3, "seed": 5}


def _key(row) -> tuple:
    soft = row["softmask"].tobytes() if "softmask" in row else b""
    return (row["species"], row["seq_id"], row["start"], row["end"], row["strand"], row["input_ids"].tobytes(),
            row["attention_mask"].tobytes(), soft)


@pytest.mark.parametrize("file_format,num_proc", [("parquet", 1), ("arrow", 2)])
def test_shards_round_trip(shared_data, tmp_path, tokenizer, file_format, num_proc):
    out = tmp_path / "shards"
    metadata = prepare_shards(
        EXAMPLE_MANIFEST, out, tokenizer, max_tokens=200, file_format=file_format, num_proc=num_proc,
        progress=False, softmask=True, reverse_complement=0.5, **OPTIONS,
    )
    assert set(metadata["splits"]) == {"train", "validation"}
    assert json.loads((out / "genolm_shards.json").read_text()) == metadata
    for split in ("train", "validation"):
        direct = genome_dataset(
            EXAMPLE_MANIFEST, tokenizer, max_tokens=200, split=split, softmask=True, reverse_complement=0.5,
            stopping_strategy="all_exhausted_without_replacement", **OPTIONS,
        )
        expected = Counter(_key(r) for r in direct)
        stored = genome_dataset(out, tokenizer, max_tokens=200, split=split, softmask=True,
                                stopping_strategy="all_exhausted_without_replacement")
        assert Counter(_key(r) for r in stored) == expected
        assert sum(meta.get("rows", 0) for meta in metadata["splits"][split].values()) == sum(expected.values())
    train_rows = sum(meta["rows"] for meta in metadata["splits"]["train"].values())
    assert train_rows > 1000
    if file_format == "parquet":
        first = out / metadata["splits"]["train"]["Oryza sativa"]["files"][0]
        table = pq.read_table(first)
        assert table.schema.field("input_ids").type.list_size == 201
        assert table.num_rows == pq.ParquetFile(first).metadata.num_rows


def test_shards_shuffle_resume_and_checks(shared_data, tmp_path, tokenizer):
    out = tmp_path / "shards"
    prepare_shards(shared_data / "rice_chr2_1mb.fa.gz", out, tokenizer, max_tokens=100, splits=("train",),
                   rows_per_group=256, progress=False, **OPTIONS)
    ds = genome_dataset(out, tokenizer, max_tokens=100, split="train", shuffle=True, seed=1)
    iterator = iter(ds)
    head = [_key(next(iterator)) for _ in range(700)]
    state = ds.state_dict()
    rest = [_key(r) for r in iterator]
    resumed = genome_dataset(out, tokenizer, max_tokens=100, split="train", shuffle=True, seed=1)
    resumed.load_state_dict(state)
    assert [_key(r) for r in resumed] == rest
    ordered = [_key(r) for r in genome_dataset(out, tokenizer, max_tokens=100, split="train")]
    assert sorted(head + rest) == sorted(ordered) and head != ordered[:700]
    row = next(iter(genome_dataset(out, tokenizer, max_tokens=100)))
    assert row["input_ids"].dtype == np.int64
    assert row["attention_mask"].sum() == (row["input_ids"] != tokenizer.pad_token_id).sum()
    with pytest.raises(GenomeDataError, match="max_tokens=100, not 200"):
        genome_dataset(out, tokenizer, max_tokens=200)
    with pytest.raises(GenomeDataError, match="pass reverse_complement=0"):
        genome_dataset(out, tokenizer, max_tokens=100, reverse_complement=0.5)
    with pytest.raises(GenomeDataError, match="written without the softmask column"):
        genome_dataset(out, tokenizer, max_tokens=100, softmask=True)
    with pytest.raises(GenomeDataError, match="split 'validation' was not written"):
        genome_dataset(out, tokenizer, max_tokens=100, split="validation")
    with pytest.raises(GenomeDataError, match="output folder is not empty"):
        prepare_shards(shared_data / "rice_chr2_1mb.fa.gz", out, tokenizer, progress=False)


def test_prepare_command(shared_data, tmp_path, capsys):
    out = tmp_path / "out"
    args = build_parser().parse_args(["data", "prepare", str(EXAMPLE_MANIFEST), str(out), "--max-tokens", "500",
                              "--splits", "train", "--block-size", "250000", "--num-shards", "2"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["train"]) == {"Arabidopsis thaliana", "Oryza sativa", "Arabidopsis thaliana chloroplast"}
    metadata = json.loads((out / "genolm_shards.json").read_text())
    assert metadata["options"]["max_tokens"] == 500 and metadata["tokenizer"]["k"] == 6
    assert all(summary["train"][k]["rows"] > 0 for k in summary["train"])


def test_prepare_failure_leaves_no_folder_and_overwrite_replaces(shared_data, tmp_path, tokenizer, monkeypatch):
    """Shards are written into a temporary folder renamed at the end: a failure part-way leaves nothing at
    OUT_DIR (nor a half-filled old one), and overwrite replaces the folder as a whole."""
    import genolm.data.shards as shards_module

    fasta = shared_data / "athaliana_chloroplast.fa"
    real, calls = shards_module._write_shard, []

    def failing(job):
        calls.append(1)
        real(job)  # the shard file is written, then the disk fails
        raise OSError("disk went away")

    monkeypatch.setattr(shards_module, "_write_shard", failing)
    out = tmp_path / "shards"
    with pytest.raises(OSError, match="disk went away"):
        prepare_shards(fasta, out, tokenizer, max_tokens=100, splits=("train",), num_shards=2, progress=False)
    assert calls == [1] and list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    out.mkdir()
    (out / "stale.txt").write_text("old")
    prepare_shards(fasta, out, tokenizer, max_tokens=100, splits=("train",), num_shards=2, progress=False,
                   overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "genolm_shards.json").exists()
    assert sum(1 for _ in genome_dataset(out, tokenizer, max_tokens=100)) > 0
    with pytest.raises(ValueError, match=rf"output folder out_dir {fasta} is also the input sources"):
        prepare_shards(fasta, fasta, tokenizer, max_tokens=100, progress=False, overwrite=True)
