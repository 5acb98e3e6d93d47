"""The annotation task builder (``genolm data make-task``) against the real Arabidopsis and rice annotations.

Windows are checked against pyfaidx slices of the FASTA and against splice sites computed directly from the
GFF3 lines, not through the builder's own transcript models.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyfaidx
import pytest

from genolm.data.tasks import (
    CDS_TOKEN_LABELS,
    IGNORE_INDEX,
    assign_splits,
    build_task,
    gene_loci,
    make_task,
)
from genolm.genome import GFF3, read_gff3, reverse_complement

CHR5 = "Chr5_25975502_26975502"


@pytest.fixture(scope="module")
def chr5_fasta(shared_data, tmp_path_factory) -> Path:
    """The Chr5 excerpt as plain FASTA (pyfaidx reads bgzip only with Biopython)."""
    path = tmp_path_factory.mktemp("chr5") / "chr5.fa"
    with gzip.open(shared_data / "athaliana_chr5_tail.fa.gz", "rt") as src:
        path.write_text(src.read())
    return path


def _oriented(fasta: pyfaidx.Fasta, row) -> str:
    piece = str(fasta[row.seq_id][row.start : row.end]).upper()
    return piece if row.strand == "+" else reverse_complement(piece)


def _gff_sites(gff_path: Path) -> dict[str, set[tuple[str, int]]]:
    """Donor / acceptor sites straight from the exon lines: (strand, 1-based position of the intron's first
    base in transcript orientation for donors, its last base for acceptors)."""
    exons = defaultdict(list)
    for f in read_gff3(gff_path):
        if f.type == "exon":
            exons[f.parents[0]].append((f.start, f.end, f.strand))
    sites = {"donor": set(), "acceptor": set()}
    for parts in exons.values():
        parts.sort()
        for (_, e1, strand), (s2, _, _) in zip(parts, parts[1:]):
            first, last = e1 + 1, s2 - 1  # the intron, 1-based closed
            if strand == "+":
                sites["donor"].add((strand, first))
                sites["acceptor"].add((strand, last))
            else:
                sites["donor"].add((strand, last))
                sites["acceptor"].add((strand, first))
    return sites


def test_gff3_reader_rejects_bad_lines(tmp_path):
    bad = tmp_path / "bad.gff3"
    bad.write_text("##gff-version 3\nchr1\tsrc\tgene\t10\t5\t.\t+\t.\tID=g1\n")
    with pytest.raises(ValueError, match=r"bad.gff3:2: invalid interval"):
        read_gff3(bad)
    bad.write_text("chr1\tsrc\tgene\t1\t5\t.\t+\t.\n")
    with pytest.raises(ValueError, match=r"bad.gff3:1: expected 9"):
        read_gff3(bad)
    bad.write_text("chr1\tsrc\tmRNA\t1\t5\t.\t+\t.\tID=t1;Parent=nothing\n")
    with pytest.raises(ValueError, match="Parent 'nothing'"):
        GFF3(bad)


def test_gff3_transcripts_and_trans_splicing(shared_data):
    annotation = GFF3(shared_data / "athaliana_chloroplast.gff3")
    transcripts = {t.id: t for t in annotation.transcripts()}
    assert len(transcripts) == 129  # 85 protein-coding genes (CDS under the gene), 37 tRNAs, 7 rRNAs
    spliced = {t.id for t in transcripts.values() if t.trans_spliced}
    assert spliced == {"gene-ArthCp001", "gene-ArthCp047"}  # the two rps12 copies
    assert all(not transcripts[t].introns() for t in spliced)
    rps16 = transcripts["gene-ArthCp004"]  # CDS 5084-5283, 6149-6188 on the minus strand
    assert rps16.structure == "CDS" and rps16.introns() == [(5284, 6148)] and rps16.five_prime == 6188
    # percent-encoded attributes are decoded
    assert transcripts["rna-ArthCt088"].attributes["product"] == ["tRNA-His"]


def test_splice_sites_agree_with_gff3_and_fasta(shared_data, chr5_fasta):
    gff = shared_data / "athaliana_chr5_tail.gff3"
    table = build_task(chr5_fasta, gff, "splice_sites", window=100, seed=1)
    fasta = pyfaidx.Fasta(str(chr5_fasta))
    truth = _gff_sites(gff)
    half = 50
    for row in table.itertuples():
        assert len(row.sequence) == 100 and row.sequence == _oriented(fasta, row)
    donors, acceptors = table[table.kind == "donor"], table[table.kind == "acceptor"]
    assert set(zip(donors.strand, donors.site)) == truth["donor"]
    assert set(zip(acceptors.strand, acceptors.site)) == truth["acceptor"]
    assert len(truth["donor"]) == 51 and (donors.label == 1).all() and (acceptors.label == 2).all()
    # All Chr5 introns are GT...AG: donors start with GT, acceptors end with AG, at the window centre.
    assert (donors.sequence.str[half : half + 2] == "GT").all()
    assert (acceptors.sequence.str[half - 2 : half] == "AG").all()
    # Decoys: same geometry, label 0, never at an annotated site.
    for kind, motif, cut in (
        ("donor", "GT", slice(half, half + 2)),
        ("acceptor", "AG", slice(half - 2, half)),
    ):
        decoys = table[table.kind == f"{kind}_decoy"]
        assert len(decoys) == 51 and (decoys.label == 0).all()
        assert (decoys.sequence.str[cut] == motif).all()
        assert not set(zip(decoys.strand, decoys.site)) & truth[kind]


def test_splice_sites_keep_non_canonical_unless_asked(shared_data):
    fasta, gff = shared_data / "rice_chr2_1mb.fa.gz", shared_data / "rice_chr2_1mb.gff3"
    table = build_task(fasta, gff, "splice_sites", sites="donor", window=40)
    donors = table[table.kind == "donor"]
    assert set(table.label) == {0, 1} and set(table.kind) == {"donor", "donor_decoy"}
    # README: of 593 CDS gaps, 581 are GT...AG, 11 GC...AG, 1 AT...AA (585 distinct introns here)
    assert donors.motif.value_counts().to_dict() == {"GT": 573, "GC": 11, "AT": 1}
    canonical = build_task(fasta, gff, "splice_sites", sites="donor", window=40, canonical_only=True)
    assert canonical[canonical.kind == "donor"].motif.value_counts().to_dict() == {"GT": 573, "GC": 11}


def test_promoters_windows_and_background(shared_data):
    fasta_path, gff = shared_data / "athaliana_chloroplast.fa", shared_data / "athaliana_chloroplast.gff3"
    table = build_task(
        fasta_path, gff, "promoters", upstream=100, downstream=20, test_fraction=0, validation_fraction=0
    )
    fasta = pyfaidx.Fasta(str(fasta_path))
    genome = str(fasta["NC_000932.1"][:]).upper()
    positives, background = table[table.label == 1], table[table.label == 0]
    tss = {}
    for t in GFF3(gff).transcripts():
        if not t.trans_spliced:
            tss[(t.strand, t.start if t.strand == "+" else t.end)] = t.id
    inside = {(d, t) for d, t in tss if (100 < t <= 154_478 - 20 if d == "+" else 20 <= t <= 154_478 - 100)}
    assert set(zip(positives.strand, positives.tss)) == inside and len(inside) >= 120
    for row in table.itertuples():
        assert len(row.sequence) == 120 and row.sequence == _oriented(fasta, row)
    for row in positives.itertuples():  # the first transcribed base sits at index `upstream`
        base = genome[row.tss - 1] if row.strand == "+" else reverse_complement(genome[row.tss - 1])
        assert row.sequence[100] == base
    # background: about 1 per positive, far from every promoter window
    assert 0.9 * len(positives) <= len(background) <= len(positives)
    windows = list(zip(positives.start, positives.end))
    for row in background.itertuples():
        assert all(row.start >= e + 120 or row.end <= s - 120 for s, e in windows)
    assert abs(background.gc.mean() - positives.gc.mean()) < 0.03  # GC-matched


def test_cds_tokens_labels(shared_data):
    table = build_task(
        shared_data / "athaliana_chloroplast.fa",
        shared_data / "athaliana_chloroplast.gff3",
        "cds_tokens",
        window=1000,
        test_fraction=0,
        validation_fraction=0,
    )
    labels = np.full(154_478, -1)
    for row in table.itertuples():
        assert len(row.labels) == len(row.sequence) == 1000
        labels[row.start : row.end] = row.labels
    code = {name: i for i, name in enumerate(CDS_TOKEN_LABELS)}
    assert (labels[382:1444] == code["CDS"]).all()  # psbA CDS 383-1444
    assert (labels[2055:3570] == code["CDS"]).all()  # matK CDS, inside the trnK intron
    assert (labels[[1751, 4309]] == code["intron"]).all()  # trnK intron 1752-4310
    assert (labels[[1716, 4346]] == code["noncoding_exon"]).all()  # trnK exons
    assert (labels[97999 + 30] == IGNORE_INDEX) and (labels[97999] == code["CDS"])  # trans-spliced rps12
    assert labels[1500] == code["intergenic"]


def test_splits_hold_out_regions_and_whole_genes(shared_data):
    fasta, gff = shared_data / "rice_chr2_1mb.fa.gz", shared_data / "rice_chr2_1mb.gff3"
    table = build_task(fasta, gff, "splice_sites", window=100, seed=3)
    assert set(table.split) == {"train", "validation", "test"}
    positives = table[table.label > 0]
    assert positives.groupby("gene").split.nunique().max() == 1  # a gene never spans two splits
    share = table.split.value_counts(normalize=True)
    assert 0.1 < share["test"] < 0.3 and 0.03 < share["validation"] < 0.2
    # explicit held-out regions: 1-based closed on the command line
    held = build_task(
        fasta,
        gff,
        "splice_sites",
        window=100,
        test_regions=["Chr2:1-300000"],
        validation_regions=["Chr2:300001-400000"],
    )
    assert (held[held.split == "test"].end <= 300_000).all()
    assert held[held.split == "validation"].start.between(300_000, 400_000).all()
    assert (held[held.split == "train"].start >= 400_000).all()
    # held-out chromosome: everything in it
    rows = pd.DataFrame({"seq_id": ["a", "b"], "start": [0, 0], "end": [10, 10]})
    loci = gene_loci(GFF3(gff))
    assert assign_splits(rows, loci, test_chromosomes=["b"]).tolist() == ["train", "test"]


def test_make_task_files_load_in_finetuning(shared_data, chr5_fasta, tmp_path):
    out = tmp_path / "splice"
    info = make_task(chr5_fasta, shared_data / "athaliana_chr5_tail.gff3", "splice_sites", out, window=60)
    assert json.loads((out / "task.json").read_text()) == info
    assert info["label_names"] == ["none", "donor", "acceptor"]
    train = pd.read_parquet(out / "train.parquet")
    assert list(train.columns[:3]) == ["sequence", "label", "name"] and train.name.is_unique
    assert sum(c["rows"] for c in info["counts"].values()) == 204
    tokens = tmp_path / "tokens"
    make_task(
        shared_data / "athaliana_chloroplast.fa",
        shared_data / "athaliana_chloroplast.gff3",
        "cds_tokens",
        tokens,
        window=600,
        file_format="csv",
    )
    frame = pd.read_csv(tokens / "train.csv")
    assert len(json.loads(frame.labels[0])) == len(frame.sequence[0]) == 600
    data = pytest.importorskip("genolm.finetune.data")
    records = data.load_records(out / "train.parquet")
    spec = data.LabelSpec.fit("classification", records)
    assert spec.num_labels == 3 and len(records) == len(train)
    make_task(
        shared_data / "athaliana_chloroplast.fa",
        shared_data / "athaliana_chloroplast.gff3",
        "cds_tokens",
        tokens,
        window=600,
        overwrite=True,  # the folder holds the CSV task: replaced as a whole
    )
    assert sorted(p.name for p in tokens.iterdir()) == ["task.json", "test.parquet", "train.parquet", "validation.parquet"]
    token_records = data.load_records(tokens / "train.parquet")
    token_spec = data.LabelSpec.fit("token_classification", token_records)
    encoded = token_spec.encode(token_records)
    assert token_spec.num_labels == 4 and (np.concatenate(encoded) == IGNORE_INDEX).any()


def test_make_task_command(shared_data, tmp_path):
    from genolm.cli import build_parser

    args = build_parser().parse_args(
        [
            "data",
            "make-task",
            "--fasta",
            str(shared_data / "athaliana_chloroplast.fa"),
            "--gff3",
            str(shared_data / "athaliana_chloroplast.gff3"),
            "--task",
            "promoters",
            str(tmp_path / "p"),
            "--upstream",
            "60",
            "--downstream",
            "0",
            "--test-regions",
            "NC_000932.1:1-50000",
            "--format",
            "csv",
        ]
    )
    assert args.func(args) == 0
    info = json.loads((tmp_path / "p" / "task.json").read_text())
    assert info["sequence_length"] == 60 and info["files"]["test"] == "test.csv"
    test = pd.read_csv(tmp_path / "p" / "test.csv")
    assert len(test) > 0 and (test.end <= 50_000).all() and (test.sequence.str.len() == 60).all()


def test_mismatched_fasta_and_gff3_is_an_error(shared_data):
    with pytest.raises(ValueError, match="are not records of"):
        build_task(shared_data / "athaliana_chloroplast.fa", shared_data / "athaliana_chr5_tail.gff3", "promoters")
    with pytest.raises(ValueError, match="unknown task"):
        build_task(shared_data / "athaliana_chloroplast.fa", shared_data / "athaliana_chloroplast.gff3", "enhancers")


def test_make_task_output_folder_is_checked_first_and_written_whole(shared_data, tmp_path, monkeypatch):
    """A used output folder is refused before any work (overwrite=True replaces it); an output inside the
    inputs is refused; a failure part-way leaves no folder."""
    import genolm.data.tasks as tasks_module
    from genolm.errors import OutputPathError

    fasta, gff3 = shared_data / "athaliana_chloroplast.fa", shared_data / "athaliana_chloroplast.gff3"
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    built = []
    monkeypatch.setattr(tasks_module, "build_task", lambda *a, **k: built.append(1))
    with pytest.raises(OutputPathError, match=rf"output folder out_dir {used} exists and is not empty"):
        make_task(fasta, gff3, "cds_tokens", used, window=600)
    with pytest.raises(OutputPathError, match=rf"output folder out_dir {fasta} is also the input fasta"):
        make_task(fasta, gff3, "cds_tokens", fasta, window=600, overwrite=True)
    assert built == [] and [p.name for p in used.iterdir()] == ["notes.txt"]
    monkeypatch.undo()

    def failing_write(*args, **kwargs):
        raise OSError("disk went away")

    monkeypatch.setattr(tasks_module, "_write_task", failing_write)
    with pytest.raises(OSError, match="disk went away"):
        make_task(fasta, gff3, "cds_tokens", tmp_path / "new", window=600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["used"]
