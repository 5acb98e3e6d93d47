"""``genolm annotate``: streamed, stitched predictions equal a per-window reference; valid GFF3 / BED / tracks."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genolm import GenoLMConfig, GenoLMForTokenClassification
from genolm.cli import main
from genolm.inference import Genome
from genolm.inference.annotate import annotate_fasta, naive_predict_bases, predict_bases, stitch_cuts

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = ["intergenic", "exon", "intron"]
WINDOW, STRIDE = 12, 6  # tokens


def tiny_annotator(per_nucleotide: bool = True, multi_label: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    config = GenoLMConfig.from_preset(
        "tiny",
        per_nucleotide=per_nucleotide,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
        problem_type="multi_label_classification" if multi_label else None,
    )
    model = GenoLMForTokenClassification(config).eval()
    with torch.no_grad():  # a random head is nearly uniform; sharpen it so every label gets called somewhere
        model.classifier.weight.mul_(40)
    return model


@pytest.fixture(scope="module")
def annotator_dir(tmp_path_factory, tokenizer) -> Path:
    out = tmp_path_factory.mktemp("annotator")
    tiny_annotator().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def genome_fasta(tmp_path_factory, shared_data) -> Path:
    """Two real records: 1,500 bp of the chloroplast with an N run, and 1,100 bp of soft-masked Chr5."""
    cp = Genome(shared_data / "athaliana_chloroplast.fa").fetch("NC_000932.1", 2000, 3500)
    chr5 = Genome(shared_data / "athaliana_chr5_tail.fa.gz").fetch("Chr5_25975502_26975502", 620_000, 621_100)
    assert chr5 != chr5.upper()  # has soft-masked bases
    path = tmp_path_factory.mktemp("genome") / "mini.fa"
    with open(path, "w") as handle:
        for name, seq in {"cp": cp[:700] + "N" * 13 + cp[700:], "chr5": chr5}.items():
            handle.write(f">{name} real sequence\n")
            handle.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    return path


def sequences(fasta: Path) -> dict[str, str]:
    genome = Genome(fasta)
    return {name: genome.fetch(name, 0, genome.lengths[name]) for name in genome.names}


def stitched(model, tokenizer, seq: str, chunk: int, **kwargs) -> np.ndarray:
    blocks = list(
        predict_bases(model, tokenizer, (seq[i : i + chunk] for i in range(0, len(seq), chunk)), **kwargs)
    )
    assert [start for start, _ in blocks] == list(np.cumsum([0] + [len(p) for _, p in blocks[:-1]]))
    return np.concatenate([p for _, p in blocks])


@pytest.mark.parametrize("per_nucleotide", [True, False])
def test_streamed_predictions_equal_per_window_reference(tokenizer, per_nucleotide):
    """Random sequences with N runs, several tilings and chunk sizes: the streamed, stitched per-base
    probabilities equal running every window alone and keeping, for each base, its most central window."""
    model = tiny_annotator(per_nucleotide)
    rng = random.Random(0)
    for trial in range(5):
        seq = "".join(rng.choice("ACGT") for _ in range(rng.randint(150, 500)))
        if trial % 2:
            at = rng.randint(0, len(seq))
            seq = seq[:at] + "N" * rng.randint(1, 20) + seq[at:].lower()
        window, stride = [(12, 6), (10, 3), (8, 8), (7, 5), (12, 11)][trial]
        reference = naive_predict_bases(model, tokenizer, seq, window_tokens=window, stride_tokens=stride)
        for chunk in (37, 1000):
            fast = stitched(
                model, tokenizer, seq, chunk, window_tokens=window, stride_tokens=stride, batch_size=3
            )
            np.testing.assert_allclose(fast, reference, atol=1e-5, rtol=0)


def test_short_sequence_and_stitch_cuts(tokenizer):
    model = tiny_annotator()
    for seq in ("A", "ACGTAC", "ACGTACGTNNA"):
        fast = stitched(model, tokenizer, seq, 4, window_tokens=WINDOW, stride_tokens=STRIDE)
        np.testing.assert_allclose(
            fast, naive_predict_bases(model, tokenizer, seq, window_tokens=WINDOW), atol=1e-5
        )
    # Equal windows hand over at the midpoint of their overlap; ties go to the earlier window.
    assert stitch_cuts([(0, 72), (36, 108), (72, 144)]) == [54, 90]
    assert stitch_cuts([(0, 10), (5, 16)]) == [8]  # centres 5 and 10.5: base 7 (7.5) is nearer the first


def test_prediction_streams_in_bounded_memory(tokenizer):
    """Blocks come out while the sequence is still being read: the first block needs only a few chunks."""
    model = tiny_annotator()
    rng = random.Random(1)
    chunks_read = []

    def chunks():
        for i in range(200):
            chunks_read.append(i)
            yield "".join(rng.choice("ACGT") for _ in range(50))

    stream = predict_bases(
        model, tokenizer, chunks(), window_tokens=WINDOW, stride_tokens=STRIDE, batch_size=2
    )
    start, probs = next(stream)
    assert start == 0 and len(chunks_read) < 10
    assert sum(len(p) for _, p in stream) + len(probs) == 200 * 50


def parse_gff3(path: Path):
    regions, features = {}, []
    for line in path.read_text().splitlines():
        if line.startswith("##sequence-region"):
            _, name, first, last = line.split()
            regions[name] = (int(first), int(last))
        elif not line.startswith("#"):
            fields = line.split("\t")
            assert len(fields) == 9
            features.append(fields)
    return regions, features


def called_runs(probs: np.ndarray, label: int) -> list[tuple[int, int]]:
    called = probs.argmax(1) == label
    edges = np.diff(np.concatenate(([0], called.astype(int), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def test_annotate_writes_valid_gff3_and_bed(annotator_dir, genome_fasta, tokenizer, tmp_path, capsys):
    """GFF3 is 1-based closed and BED 0-based half-open; both hold exactly the runs of bases whose top label is
    the feature's label, computed here from the per-window reference, with their mean probability."""
    gff3, bed = tmp_path / "ann.gff3", tmp_path / "ann.bed"
    common = [
        "annotate",
        "--model",
        str(annotator_dir),
        "--fasta",
        str(genome_fasta),
        "--window-tokens",
        str(WINDOW),
        "--stride-tokens",
        str(STRIDE),
        "--device",
        "cpu",
    ]
    assert main([*common, "--out", str(gff3)]) == 0
    assert "bp/s" in capsys.readouterr().err
    assert main([*common, "--out", str(bed), "--skip-label", "intergenic", "--quiet"]) == 0

    seqs = sequences(genome_fasta)
    model = GenoLMForTokenClassification.from_pretrained(annotator_dir).eval()
    regions, features = parse_gff3(gff3)
    assert gff3.read_text().startswith("##gff-version 3\n")
    assert regions == {name: (1, len(seq)) for name, seq in seqs.items()}
    scores = {(f[0], f[2], int(f[3]), int(f[4])): float(f[5]) for f in features}
    assert len(scores) == len(features)
    expected_gff, expected_bed = {}, set()
    for name, seq in seqs.items():
        probs = naive_predict_bases(model, tokenizer, seq, window_tokens=WINDOW, stride_tokens=STRIDE)
        for label, label_name in enumerate(LABELS):
            for start, end in called_runs(probs, label):
                expected_gff[(name, label_name, start + 1, end)] = probs[start:end, label].mean()
                if label_name != "intergenic":
                    expected_bed.add((name, start, end, label_name))
    assert scores.keys() == expected_gff.keys()
    for key, mean in expected_gff.items():
        assert scores[key] == pytest.approx(mean, abs=1e-4)
    assert {f[2] for f in features} == set(LABELS)
    for f in features:
        assert (
            f[1] == "genolm"
            and 1 <= int(f[3]) <= int(f[4]) <= regions[f[0]][1]
            and f[8].startswith("ID=genolm_")
        )
    assert len({f[8].split(";")[0] for f in features}) == len(features)  # unique IDs

    rows = [line.split("\t") for line in bed.read_text().splitlines()]
    assert all(len(r) == 6 and 0 <= int(r[1]) < int(r[2]) <= len(seqs[r[0]]) for r in rows)
    assert all(0 <= int(r[4]) <= 1000 for r in rows)
    assert {(r[0], int(r[1]), int(r[2]), r[3]) for r in rows} == expected_bed


def test_multi_label_threshold(genome_fasta, tokenizer, tmp_path):
    """Multi-label models: one sigmoid per label, bases called where p >= threshold; labels may overlap."""
    model = tiny_annotator(multi_label=True, seed=3)
    out = tmp_path / "ml.bed"
    annotate_fasta(
        model, tokenizer, genome_fasta, out, window_tokens=WINDOW, stride_tokens=STRIDE, threshold=0.6
    )
    seq = sequences(genome_fasta)["chr5"]
    probs = naive_predict_bases(model, tokenizer, seq, window_tokens=WINDOW, stride_tokens=STRIDE)
    rows = [line.split("\t") for line in out.read_text().splitlines() if line.startswith("chr5")]
    called_any = probs >= 0.6
    assert called_any.any(1).mean() < 1 and (called_any.sum(1) > 1).any()  # gaps and overlaps both occur
    for label, name in enumerate(LABELS):
        called = probs[:, label] >= 0.6
        covered = np.zeros(len(seq), dtype=bool)
        for r in rows:
            if r[3] == name:
                covered[int(r[1]) : int(r[2])] = True
        np.testing.assert_array_equal(covered, called)


def test_probability_tracks_bigwig_and_bedgraph(
    annotator_dir, genome_fasta, tokenizer, tmp_path, monkeypatch
):
    model = GenoLMForTokenClassification.from_pretrained(annotator_dir).eval()
    seqs = sequences(genome_fasta)
    probs = naive_predict_bases(model, tokenizer, seqs["cp"], window_tokens=WINDOW, stride_tokens=STRIDE)
    kwargs = dict(window_tokens=WINDOW, stride_tokens=STRIDE)

    # Without pyBigWig: bedGraph, 0-based half-open, runs of equal (rounded) values merged.
    monkeypatch.setitem(sys.modules, "pyBigWig", None)
    report = annotate_fasta(
        model, tokenizer, genome_fasta, tmp_path / "a.bed", bigwig_dir=tmp_path / "bg", **kwargs
    )
    assert sorted(Path(p).name for p in report.tracks) == [f"{name}.bedGraph" for name in sorted(LABELS)]
    track = np.full(len(seqs["cp"]), np.nan)
    lines = (tmp_path / "bg" / "exon.bedGraph").read_text().splitlines()
    assert lines[0].startswith("track type=bedGraph")
    for line in lines[1:]:
        chrom, start, end, value = line.split("\t")
        if chrom == "cp":
            assert np.isnan(track[int(start) : int(end)]).all()
            track[int(start) : int(end)] = float(value)
    np.testing.assert_allclose(track, probs[:, 1], atol=1e-4)
    monkeypatch.undo()

    pyBigWig = pytest.importorskip("pyBigWig")
    report = annotate_fasta(
        model, tokenizer, genome_fasta, tmp_path / "b.bed", bigwig_dir=tmp_path / "bw", **kwargs
    )
    with pyBigWig.open(str(tmp_path / "bw" / "exon.bw")) as bw:
        assert bw.chroms() == {name: len(seq) for name, seq in seqs.items()}
        np.testing.assert_allclose(bw.values("cp", 0, len(seqs["cp"])), probs[:, 1], atol=1e-6)


def test_annotate_rejects_bad_output_labels_and_heads(
    annotator_dir, tiny_mlm_dir, genome_fasta, tmp_path, capsys
):
    common = ["annotate", "--fasta", str(genome_fasta), "--quiet"]
    assert main([*common, "--model", str(annotator_dir), "--out", str(tmp_path / "x.txt")]) == 2
    assert "expected a .gff3" in capsys.readouterr().err
    assert (
        main(
            [
                *common,
                "--model",
                str(annotator_dir),
                "--out",
                str(tmp_path / "x.bed"),
                "--skip-label",
                "exxon",
            ]
        )
        == 2
    )
    assert "exxon" in capsys.readouterr().err
    assert (
        main([*common, "--model", str(tiny_mlm_dir), "--out", str(tmp_path / "x.bed")]) == 2
    )  # masked-LM head
    assert "needs a *ForTokenClassification model" in capsys.readouterr().err


def test_annotate_error_leaves_no_intervals_or_tracks(annotator_dir, genome_fasta, tokenizer, tmp_path, monkeypatch):
    """A failure on the second sequence once left a GFF3 holding the first one only, and half-written tracks:
    now neither the intervals nor any track appears, and ``resume=True`` completes the run."""
    import genolm.inference.annotate as annotate_module

    model = GenoLMForTokenClassification.from_pretrained(annotator_dir).eval()
    real = annotate_module.predict_bases
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of accelerator memory")
        yield from real(*args, **kwargs)

    monkeypatch.setattr(annotate_module, "predict_bases", failing)
    monkeypatch.setitem(sys.modules, "pyBigWig", None)  # bedGraph tracks
    out, tracks = tmp_path / "ann.gff3", tmp_path / "tracks"
    with pytest.raises(RuntimeError, match="accelerator memory"):
        annotate_fasta(model, tokenizer, genome_fasta, out, bigwig_dir=tracks, window_tokens=WINDOW,
                       stride_tokens=STRIDE)
    # Neither intervals nor tracks: only the first sequence's part, which a resumed run keeps.
    assert calls == [1, 1] and sorted(p.name for p in tmp_path.iterdir()) == ["ann.gff3.genolm-parts"]
    monkeypatch.setattr(annotate_module, "predict_bases", real)
    kwargs = dict(window_tokens=WINDOW, stride_tokens=STRIDE)
    annotate_fasta(model, tokenizer, genome_fasta, out, bigwig_dir=tracks, resume=True, **kwargs)
    whole, whole_tracks = tmp_path / "whole.gff3", tmp_path / "whole_tracks"
    annotate_fasta(model, tokenizer, genome_fasta, whole, bigwig_dir=whole_tracks, **kwargs)
    assert out.read_text() == whole.read_text()
    assert sorted(p.name for p in tracks.iterdir()) == sorted(p.name for p in whole_tracks.iterdir()) != []
    for track in tracks.iterdir():
        assert track.read_text() == (whole_tracks / track.name).read_text()


def test_annotate_refuses_an_output_that_is_its_input(annotator_dir, genome_fasta, tmp_path, capsys):
    import hashlib
    import shutil

    fasta = tmp_path / "genome.gff3"  # a FASTA with an unlucky name, given as --out too
    shutil.copy(genome_fasta, fasta)
    before = hashlib.sha256(fasta.read_bytes()).hexdigest()
    argv = ["annotate", "--model", str(annotator_dir), "--fasta", str(fasta), "--out", str(fasta), "--device", "cpu"]
    assert main(argv) == 2
    assert f"output --out {fasta} is also the input --fasta" in capsys.readouterr().err
    assert hashlib.sha256(fasta.read_bytes()).hexdigest() == before
