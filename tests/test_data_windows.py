"""Tokenised windows: exact sequence, N runs, soft-mask, splits, sharding, resume and mixtures."""

from __future__ import annotations

import gzip
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyfaidx
import pysam
import pytest
import torch
from datasets.distributed import split_dataset_by_node

from genolm.data import GenomeDataError, collate_windows, genome_dataset, load_manifest, split_of
from genolm.data.windows import WindowOptions

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_MANIFEST = REPO / "recipes" / "data" / "example_3_species.tsv"
COMPLEMENT = str.maketrans("ACGTN", "TGCAN")
IUPAC_TO_N = str.maketrans({**{c: "N" for c in "RYSWKMBDHVX"}, "U": "T"})


@pytest.fixture(scope="module")
def chr5_plain(shared_data, tmp_path_factory) -> Path:
    """The Chr5 excerpt decompressed to plain FASTA, for pyfaidx (which needs Biopython for bgzip)."""
    path = tmp_path_factory.mktemp("chr5") / "chr5.fa"
    with gzip.open(shared_data / "athaliana_chr5_tail.fa.gz", "rb") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


def _expected(reference: pyfaidx.Fasta, row) -> str:
    seq = str(reference[row["seq_id"]][row["start"] : row["end"]]).upper().translate(IUPAC_TO_N)
    return seq.translate(COMPLEMENT)[::-1] if row["strand"] == "-" else seq


def _key(row) -> tuple:
    return row["species"], row["seq_id"], row["start"], row["end"], row["strand"], row["input_ids"].tobytes()


def test_windows_reproduce_reference_on_both_strands(shared_data, chr5_plain, tokenizer):
    reference = pyfaidx.Fasta(str(chr5_plain), sequence_always_upper=False)
    ds = genome_dataset(
        shared_data / "athaliana_chr5_tail.fa.gz", tokenizer, max_tokens=300, split=None,
        reverse_complement=0.5, block_size=100_000, seed=3,
    )
    rows = list(ds)
    strands = Counter(r["strand"] for r in rows)
    assert strands["+"] > 100 and strands["-"] > 100
    for row in rows:
        n = int(row["attention_mask"].sum()) - 1
        assert row["input_ids"].shape == row["attention_mask"].shape == (301,)
        assert row["input_ids"][0] == tokenizer.cls_token_id
        assert (row["input_ids"][n + 1 :] == tokenizer.pad_token_id).all()
        assert tokenizer.decode_genome(row["input_ids"]) == _expected(reference, row)
        # the window is exactly what the tokenizer makes of its (strand-oriented) bases
        np.testing.assert_array_equal(row["input_ids"][1 : n + 1], tokenizer.encode_genome(_expected(reference, row)))
    # forward windows tile each 100 kb block without gaps: together they cover the whole excerpt
    covered = np.zeros(1_000_001, dtype=np.int64)
    for row in rows:
        covered[row["start"] : row["end"]] += 1
    assert (covered == 1).all()
    assert max(r["end"] - r["start"] for r in rows) <= 300 * 6


def test_plain_fasta_against_pyfaidx_and_dataloader(shared_data, tokenizer):
    path = shared_data / "athaliana_chloroplast.fa"
    reference = pyfaidx.Fasta(str(path))
    ds = genome_dataset(path, tokenizer, max_tokens=1000, split=None)
    rows = list(ds)
    assert [r["species"] for r in rows[:1]] == ["athaliana_chloroplast"]
    assert rows[-1]["end"] == 154_478 and int(rows[-1]["attention_mask"].sum()) < 1001  # padded tail
    for row in rows:
        assert tokenizer.decode_genome(row["input_ids"]) == _expected(reference, row)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["input_ids"].shape == (4, 1001) and batch["input_ids"].dtype == torch.int64
    assert list(batch["seq_id"]) == ["NC_000932.1"] * 4
    fast = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_windows)))
    assert isinstance(fast["input_ids"], np.ndarray) and fast["input_ids"].shape == (4, 1001)
    np.testing.assert_array_equal(fast["attention_mask"], batch["attention_mask"].numpy())
    assert fast["start"] == batch["start"].tolist() and fast["strand"] == ["+"] * 4
    assert collate_windows(rows[:2], return_tensors="pt")["input_ids"].dtype == torch.int64


@pytest.fixture(scope="module")
def gappy_fasta(shared_data, tmp_path_factory) -> tuple[Path, str, list[tuple[int, int]]]:
    """Real chloroplast sequence with N runs of several lengths, IUPAC codes and soft-masking, indexed."""
    with pysam.FastaFile(str(shared_data / "athaliana_chloroplast.fa")) as fa:
        seq = list(fa.fetch("NC_000932.1", 0, 60_000))
    runs = {5_003: 120, 20_011: 51, 33_337: 50, 41_000: 3, 59_990: 10}  # start: length
    for start, length in runs.items():
        seq[start : start + length] = "N" * length
    seq[7_000:7_005] = list("RYkmW")
    seq[8_000:8_300] = [c.lower() for c in seq[8_000:8_300]]
    text = "".join(seq)
    path = tmp_path_factory.mktemp("gappy") / "gappy.fa"
    path.write_text(">gappy\n" + "\n".join(text[i : i + 80] for i in range(0, len(text), 80)) + "\n")
    pysam.faidx(str(path))
    excluded = [(s, s + n) for s, n in runs.items() if n > 50]
    return path, text, excluded


def test_long_n_runs_are_excluded(gappy_fasta, tokenizer):
    path, text, excluded = gappy_fasta
    ds = genome_dataset(path, tokenizer, max_tokens=64, split=None, reverse_complement=0.5)
    rows = list(ds)
    covered = np.zeros(len(text), dtype=np.int64)
    for row in rows:
        for a, b in excluded:
            assert row["end"] <= a or row["start"] >= b, f"window {row['start']}-{row['end']} crosses N run {a}-{b}"
        covered[row["start"] : row["end"]] += 1
        expected = text[row["start"] : row["end"]].upper().translate(IUPAC_TO_N)
        if row["strand"] == "-":
            expected = expected.translate(COMPLEMENT)[::-1]
        assert tokenizer.decode_genome(row["input_ids"]) == expected
    in_excluded = np.zeros(len(text), dtype=bool)
    for a, b in excluded:
        in_excluded[a:b] = True
    assert (covered[in_excluded] == 0).all()  # long runs dropped
    assert (covered[~in_excluded] == 1).all()  # everything else (short N runs included) exactly once
    # a stricter threshold also drops the 50-N run
    strict = list(genome_dataset(path, tokenizer, max_tokens=64, split=None, max_n_run=10))
    assert all(r["end"] <= 33_337 or r["start"] >= 33_387 for r in strict)
    assert any(r["start"] <= 41_000 < r["end"] for r in strict)  # 3 N stay inside a window


def test_softmask_fraction_per_token(gappy_fasta, tokenizer):
    path, text, _ = gappy_fasta
    rows = [
        r for r in genome_dataset(path, tokenizer, max_tokens=64, split=None, softmask=True, reverse_complement=0.5, seed=1)
        if r["start"] < 8_300 and r["end"] > 8_000
    ]
    assert len(rows) >= 2
    for row in rows:
        n = int(row["attention_mask"].sum()) - 1
        bases = text[row["start"] : row["end"]]
        if row["strand"] == "-":
            bases = bases[::-1]
        expected, position = [], 0
        for token_id in row["input_ids"][1 : n + 1]:
            width = len(tokenizer.decode_genome([int(token_id)]))
            piece = bases[position : position + width]
            expected.append(sum(c.islower() for c in piece) / width)
            position += width
        np.testing.assert_allclose(row["softmask"][1 : n + 1], expected, rtol=1e-6)
        assert row["softmask"][0] == 0 and not row["softmask"][n + 1 :].any()
    assert any(row["softmask"].max() == 1.0 for row in rows)


def test_short_sequences_and_stride(tmp_path, shared_data, tokenizer):
    with pysam.FastaFile(str(shared_data / "athaliana_chloroplast.fa")) as fa:
        seq = fa.fetch("NC_000932.1", 100, 3_100)
    path = tmp_path / "short.fa"
    path.write_text(f">long\n{seq}\n>short\n{seq[:20]}\n")
    rows = list(genome_dataset(path, tokenizer, max_tokens=100, split=None))
    short = [r for r in rows if r["seq_id"] == "short"]
    assert len(short) == 1 and short[0]["end"] == 20
    assert int(short[0]["attention_mask"].sum()) == 1 + 3 + 2  # <cls>, three 6-mers, two single bases
    overlapping = [r for r in genome_dataset(path, tokenizer, max_tokens=100, stride=40, split=None) if r["seq_id"] == "long"]
    # 3000 bases = 500 tokens; windows start every 40 tokens until one reaches the end
    assert [r["start"] for r in overlapping] == [240 * i for i in range(11)]
    assert overlapping[-1]["end"] == 3000 and overlapping[0]["end"] == 600
    assert len(list(genome_dataset(path, tokenizer, max_tokens=100, split=None, min_tokens=10))) == len(rows) - 1


def test_streamed_file_gives_the_same_windows(shared_data, tmp_path, tokenizer):
    copy = tmp_path / "chr5_noindex.fa.gz"
    shutil.copy(shared_data / "athaliana_chr5_tail.fa.gz", copy)  # no .fai/.gzi: read as a stream
    kwargs = {"max_tokens": 500, "split": None, "block_size": 200_000}
    indexed = [_key(r)[1:] for r in genome_dataset(shared_data / "athaliana_chr5_tail.fa.gz", tokenizer, **kwargs)]
    streamed = [_key(r)[1:] for r in genome_dataset(copy, tokenizer, **kwargs)]
    assert streamed == indexed


def test_splits_are_stable_disjoint_and_complete(shared_data, tokenizer):
    sources = {"ath": shared_data / "athaliana_chr5_tail.fa.gz", "osa": shared_data / "rice_chr2_1mb.fa.gz"}
    common = {"max_tokens": 500, "block_size": 50_000, "validation_fraction": 0.2, "test_fraction": 0.1,
              "stopping_strategy": "all_exhausted_without_replacement"}  # every window once, no oversampling
    keys = {}
    for split in ("train", "validation", "test", None):
        keys[split] = Counter(_key(r)[:4] for r in genome_dataset(sources, tokenizer, split=split, **common))
    assert keys["validation"] and keys["test"]
    assert not (keys["train"] & keys["validation"]) and not (keys["train"] & keys["test"])
    assert keys["train"] + keys["validation"] + keys["test"] == keys[None]
    again = Counter(_key(r)[:4] for r in genome_dataset(sources, tokenizer, split="validation", **common))
    assert again == keys["validation"]
    # the rule is a pure function of (species, sequence, block)
    options = WindowOptions(block_size=50_000, validation_fraction=0.2, test_fraction=0.1)
    for species, seq_id, start, _end in keys["validation"]:
        assert split_of(species, seq_id, start // 50_000, options) == "validation"
    by_sequence = {**common, "split_by": "sequence", "validation_fraction": 0.5}
    placed = Counter()
    for split in ("train", "validation", "test"):
        try:
            rows = list(genome_dataset(sources, tokenizer, split=split, **by_sequence))
        except GenomeDataError as err:  # no sequence fell into this split
            assert f"no genome has any block in split {split!r}" in str(err)
            continue
        for seq_id in {r["seq_id"] for r in rows}:  # a held-out sequence is held out whole
            assert sum(r["seq_id"] == seq_id for r in rows) == sum(k[1] == seq_id for k in keys[None].elements())
            placed[seq_id] += 1
    assert placed == {"Chr5_25975502_26975502": 1, "Chr2": 1}


def _chr5(shared_data, tokenizer, **kwargs):
    options = {"max_tokens": 100, "split": None, "block_size": 50_000, "num_shards": 8, "shuffle": True,
               "reverse_complement": 0.5, "seed": 7, **kwargs}
    return genome_dataset(shared_data / "athaliana_chr5_tail.fa.gz", tokenizer, **options)


def test_ranks_and_workers_partition_the_stream(shared_data, tokenizer):
    ds = _chr5(shared_data, tokenizer)
    full = Counter(_key(r) for r in ds)
    assert max(full.values()) == 1 and len(full) > 1000
    for world_size in (2, 3):  # 8 shards: split by shards for 2 ranks, by examples for 3
        seen: Counter = Counter()
        for rank in range(world_size):
            part = split_dataset_by_node(ds, rank=rank, world_size=world_size)
            if world_size == 2:
                loader = torch.utils.data.DataLoader(part, batch_size=None, num_workers=2)
                for row in loader:
                    row = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in row.items()}
                    seen[_key(row)] += 1
            else:
                seen.update(_key(r) for r in part)
        assert seen == full


def test_resume_from_state_dict_continues_exactly(shared_data, tokenizer):
    ds = _chr5(shared_data, tokenizer)
    iterator = iter(ds)
    head = [_key(next(iterator)) for _ in range(333)]
    state = ds.state_dict()
    rest = [_key(r) for r in iterator]
    resumed = _chr5(shared_data, tokenizer)
    resumed.load_state_dict(state)
    assert [_key(r) for r in resumed] == rest
    assert len(head) + len(rest) == len({*head, *rest})


def test_mixture_frequencies_follow_weights_and_resume(tokenizer, shared_data):
    from scipy.stats import chisquare

    entries = load_manifest(EXAMPLE_MANIFEST)
    assert all(Path(e.source).exists() for e in entries)
    ds = genome_dataset(EXAMPLE_MANIFEST, tokenizer, max_tokens=40, split=None, shuffle=True, seed=11)
    species = [e.species for e in entries]
    weights = np.array([e.weight for e in entries])
    iterator = iter(ds)
    rows = [next(iterator) for _ in range(3000)]
    observed = Counter(r["species"] for r in rows)
    counts = np.array([observed[s] for s in species])
    result = chisquare(counts, weights / weights.sum() * counts.sum())
    assert result.pvalue > 0.01, (counts, result)
    state = ds.state_dict()
    following = [_key(next(iterator)) for _ in range(200)]
    resumed = genome_dataset(EXAMPLE_MANIFEST, tokenizer, max_tokens=40, split=None, shuffle=True, seed=11)
    resumed.load_state_dict(state)
    again = iter(resumed)
    assert [_key(next(again)) for _ in range(200)] == following


def test_source_forms(shared_data, tokenizer, tmp_path):
    folder = tmp_path / "genome"
    folder.mkdir()
    for name in ("athaliana_chloroplast.fa", "athaliana_chloroplast.fa.fai"):
        shutil.copy(shared_data / name, folder / name)
    shutil.copy(shared_data / "sources" / "braker_example_genome.fa.gz", folder / "nuclear.fa.gz")
    rows = list(genome_dataset({"Arabidopsis": folder}, tokenizer, max_tokens=1000, split=None))
    assert {r["species"] for r in rows} == {"Arabidopsis"}
    assert {r["seq_id"] for r in rows} == {"NC_000932.1", *(f"X{i}" for i in range(1, 9))}
    listed = genome_dataset([shared_data / "athaliana_chloroplast.fa", {"species": "cp", "source": str(folder / "nuclear.fa.gz"), "weight": 2}], tokenizer, split=None)
    assert {r["species"] for r in listed} == {"athaliana_chloroplast", "cp"}


def test_manifest_formats_and_errors(shared_data, tmp_path, tokenizer):
    yaml_manifest = tmp_path / "genomes.yaml"
    yaml_manifest.write_text(
        "genomes:\n"
        f"  - species: rice\n    source: {shared_data / 'rice_chr2_1mb.fa.gz'}\n    weight: 3\n"
        "  - species: plastid\n    source: cp.fa\n    note: relative to this file\n"
    )
    shutil.copy(shared_data / "athaliana_chloroplast.fa", tmp_path / "cp.fa")
    entries = load_manifest(yaml_manifest)
    assert [(e.species, e.weight) for e in entries] == [("rice", 3.0), ("plastid", 1.0)]
    assert entries[1].source == str(tmp_path / "cp.fa") and entries[1].metadata == {"note": "relative to this file"}
    rows = list(genome_dataset(yaml_manifest, tokenizer, split=None, exclude="^Chr2$"))
    assert {r["species"] for r in rows} == {"plastid"}  # rice's only sequence is excluded
    bad = {
        "species\tsource\tweight\nrice\tx.fa\t-1\n": r"bad\.tsv: line 2: weight must be a positive number",
        "species\tweight\nrice\t1\n": r"bad\.tsv: line 1: header must name the columns species, source",
        "# comment\nspecies\tsource\n\tx.fa\n": r"bad\.tsv: line 3: empty 'species'",
        "species\tsource\nrice\tx.fa\t2\textra\n": r"bad\.tsv: line 2: 4 fields but the header has 2",
        "# nothing\n": r"bad\.tsv: manifest has no genomes",
    }
    for text, message in bad.items():
        (tmp_path / "bad.tsv").write_text(text)
        with pytest.raises(GenomeDataError, match=message):
            load_manifest(tmp_path / "bad.tsv")
    (tmp_path / "bad.yaml").write_text("genomes: {species: x}\n")
    with pytest.raises(GenomeDataError, match=r"bad\.yaml: expected a list of genomes"):
        load_manifest(tmp_path / "bad.yaml")
