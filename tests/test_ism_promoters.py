"""``genolm ism --feature``: promoter-wide in-silico mutagenesis of GFF3 features on real Arabidopsis data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import write_fasta

from genolm.cli import main
from genolm.inference import Genome
from genolm.inference.distributed import parts_folder
from genolm.inference.promoters import promoter_regions, select_features

pytestmark = pytest.mark.usefixtures("one_thread")

REPO_ROOT = Path(__file__).resolve().parents[1]
CHR5 = "Chr5_25975502_26975502"
WINDOW = 16
UP, DOWN = 60, 12  # small promoters keep the tiny model's runs short


@pytest.fixture(scope="module")
def chr5(shared_data):
    return shared_data / "athaliana_chr5_tail.fa.gz", shared_data / "athaliana_chr5_tail.gff3"


def gene_lines(gff3: Path) -> dict[str, tuple[int, int, str, int]]:
    """``ID -> (start, end, strand, line number)`` of the gene lines, read by hand from the tab-separated
    columns."""
    genes = {}
    for number, line in enumerate(gff3.read_text().splitlines(), start=1):
        columns = line.split("\t")
        if len(columns) == 9 and columns[2] == "gene":
            gene_id = columns[8].split("ID=")[1].split(";")[0]
            genes[gene_id] = (int(columns[3]), int(columns[4]), columns[6], number)
    return genes


def ism_args(model, fasta, gff3, out, *extra) -> list[str]:
    return [
        "ism", "--model", str(model), "--fasta", str(fasta), "--gff3", str(gff3), "--feature", "gene",
        "--upstream", str(UP), "--downstream", str(DOWN), "--window-tokens", str(WINDOW), "--device", "cpu",
        "--out", str(out), *extra,
    ]  # fmt: skip


def test_promoter_regions_are_strand_aware(chr5):
    """Each promoter against coordinates computed by hand from the GFF3 gene lines: a + gene's promoter ends
    ``downstream`` bases into the gene from its start; a - gene's lies after its end on the + strand."""
    fasta, gff3 = chr5
    genes = gene_lines(gff3)
    selected, notes = select_features(gff3, "gene")
    assert notes == [] and [f.id for f in selected] == list(genes)  # file order, all 11
    promoters = promoter_regions(selected, Genome(fasta).lengths, 1000, 200)
    strands = []
    for p in promoters:
        start, end, strand, line = genes[p.feature_id]
        strands.append(strand)
        if strand == "+":  # 1-based closed [start - 1000, start + 199]
            first, last, tss = start - 1000, start + 199, start
        else:  # 1-based closed [end - 199, end + 1000]: downstream of the gene's end on the + strand
            first, last, tss = end - 199, end + 1000, end
        assert (p.start + 1, p.end, p.tss + 1, p.strand, p.line) == (first, last, tss, strand, line)
        assert p.end - p.start == 1200 and (p.clipped_upstream, p.clipped_downstream) == (0, 0)
        assert p.relative(p.tss) == 0 and p.relative(p.tss - 1) == (-1 if strand == "+" else 1)
    assert strands.count("-") == 5 and strands.count("+") == 6
    # AT5G66600 (-) ends at 603,325: in a record cut 75 bases after it, 925 of the 1000 upstream bases are lost.
    (p,) = promoter_regions(
        [f for f in selected if f.id == "AT5G66600"], {CHR5: 603_400}, 1000, 200
    )
    assert (p.start, p.end, p.clipped_upstream, p.clipped_downstream) == (603_125, 603_400, 925, 0)
    # Promoters reaching past the record's start: upstream of a + gene, downstream of a - gene.
    lengths = Genome(fasta).lengths
    (p,) = promoter_regions([f for f in selected if f.id == "AT5G66610"], lengths, 700_000, 200)
    assert (p.start, p.end, p.clipped_upstream, p.clipped_downstream) == (0, 609_472, 700_000 - 609_272, 0)
    (p,) = promoter_regions([f for f in selected if f.id == "AT5G66600"], lengths, 10, 700_000)
    assert (p.start, p.end, p.clipped_upstream, p.clipped_downstream) == (0, 603_335, 0, 700_000 - 603_325)


def test_table_matches_region_ism_summary_and_plots(tiny_mlm_dir, chr5, tmp_path, capsys):
    """The Parquet rows of each promoter equal `genolm ism --region` on the same region; the summary equals its
    recomputation from the table with pandas; the top features' heatmaps are valid PNG images."""
    from PIL import Image

    fasta, gff3 = chr5
    genes = gene_lines(gff3)
    ids = ["AT5G66600", "AT5G66610", "AT5G66650"]  # -, +, -
    out = tmp_path / "run" / "prom"
    assert main(ism_args(tiny_mlm_dir, fasta, gff3, out, "--ids", ",".join(ids), "--chunk-features", "2",
                         "--plot-top", "2")) == 0  # fmt: skip
    assert "3 promoters (216 bp)" in capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == ["prom.parquet", "prom.plots", "prom.summary.tsv"]
    table = pq.read_table(out.with_name("prom.parquet")).to_pandas()
    assert list(table.columns) == ["feature_id", "chrom", "strand", "pos", "rel_pos", "ref", "alt", "score"]
    assert list(dict.fromkeys(table.feature_id)) == ids and len(table) == 3 * 3 * (UP + DOWN)
    seq = Genome(fasta)
    for gene_id in ids:
        rows = table[table.feature_id == gene_id].reset_index(drop=True)
        start, end, strand, _ = genes[gene_id]
        first, last = (start - UP, start + DOWN - 1) if strand == "+" else (end - DOWN + 1, end + UP)
        region_tsv = tmp_path / f"{gene_id}.tsv"
        region = ["ism", "--model", str(tiny_mlm_dir), "--fasta", str(fasta), "--region",
                  f"{CHR5}:{first}-{last}", "--window-tokens", str(WINDOW), "--device", "cpu", "--quiet",
                  "--out", str(region_tsv)]  # fmt: skip
        assert main(region) == 0
        expected = pd.read_csv(region_tsv, sep="\t")
        assert rows.pos.tolist() == expected.pos.tolist() and rows.alt.tolist() == expected.alt.tolist()
        assert rows.ref.tolist() == expected.ref.tolist() and (rows.chrom == CHR5).all()
        np.testing.assert_allclose(rows.score, expected.score, rtol=2e-6, atol=1e-7)  # the TSV keeps 7 digits
        tss = start if strand == "+" else end
        assert (rows.rel_pos == ((rows.pos - tss) if strand == "+" else (tss - rows.pos))).all()
        assert rows.rel_pos.min() == -UP and rows.rel_pos.max() == DOWN - 1 and (rows.strand == strand).all()
        assert all(seq.fetch(CHR5, p - 1, p).upper() == r for p, r in zip(rows.pos[::3], rows.ref[::3]))

    summary = pd.read_csv(out.with_name("prom.summary.tsv"), sep="\t", keep_default_na=False)
    assert summary.feature_id.tolist() == ids
    for row in summary.itertuples():
        rows = table[table.feature_id == row.feature_id]
        start, end, strand, _ = genes[row.feature_id]
        assert (row.chrom, row.strand, row.tss) == (CHR5, strand, start if strand == "+" else end)
        assert (row.start, row.end) == (rows.pos.min(), rows.pos.max())
        assert row.n_substitutions == len(rows) == 216
        assert row.mean_abs_score == pytest.approx(rows.score.abs().mean(), rel=1e-6)
        assert row.max_abs_score == pytest.approx(rows.score.abs().max(), rel=1e-6)
        # The 5 positions whose largest |score| is highest, computed with a plain sort of (-|score|, pos).
        best = {}
        for pos, rel, score in zip(rows.pos, rows.rel_pos, rows.score):
            best[pos] = max(best.get(pos, (0.0, rel))[0], abs(score)), rel
        top = sorted(best, key=lambda pos: (-best[pos][0], pos))[:5]
        assert row.top_pos == ",".join(map(str, top))
        assert row.top_rel_pos == ",".join(str(best[pos][1]) for pos in top)
    ranked = summary.sort_values("mean_abs_score", ascending=False)
    plotted = [f"{rank:03d}-{gene_id}.png" for rank, gene_id in enumerate(ranked.feature_id[:2], start=1)]
    assert sorted(summary.heatmap[summary.heatmap != ""]) == sorted(plotted)
    assert sorted(p.name for p in out.with_name("prom.plots").iterdir()) == sorted(plotted)
    for name in plotted:
        with Image.open(out.with_name("prom.plots") / name) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 300


def test_clipped_promoter_is_reported_and_scored_to_the_sequence_end(tiny_mlm_dir, chr5, tmp_path, capsys):
    fasta, gff3 = chr5
    cut = write_fasta(tmp_path / "cut.fa", {CHR5: Genome(fasta).fetch(CHR5, 0, 603_340)})
    out = tmp_path / "clipped"
    assert main(ism_args(tiny_mlm_dir, cut, gff3, out, "--ids", "AT5G66600")) == 0
    assert "AT5G66600: promoter clipped at an end of Chr5_25975502_26975502 (45 upstream, 0 downstream" in capsys.readouterr().err
    table = pd.read_parquet(out.with_name("clipped.parquet"))
    assert table.pos.min() == 603_325 - DOWN + 1 and table.pos.max() == 603_340  # 45 of 60 upstream lost
    summary = pd.read_csv(out.with_name("clipped.summary.tsv"), sep="\t")
    assert summary.loc[0, ["clipped_upstream", "clipped_downstream", "n_substitutions"]].tolist() == [45, 0, 81]


def test_bad_inputs_are_one_line_errors_before_scoring(tiny_mlm_dir, chr5, shared_data, tmp_path, capsys,
                                                        monkeypatch):  # fmt: skip
    fasta, gff3 = chr5
    import genolm.inference.ism as ism_module

    def no_scoring(*args, **kwargs):
        raise AssertionError("scoring started")

    monkeypatch.setattr(ism_module, "ism_region", no_scoring)
    out = tmp_path / "bad"
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# genes to edit\nAT5G66610\n\nAT5G99999\tunknown\n")
    cut = write_fasta(tmp_path / "cut.fa", {CHR5: Genome(fasta).fetch(CHR5, 0, 610_000)})
    cases = [
        (["--ids", "AT5G66610,AT5G00000"], f"{gff3}: no gene with ID or Name 'AT5G00000' (--ids)"),
        (["--ids-file", str(ids_file)], f"no gene with ID or Name 'AT5G99999' ({ids_file}:4)"),
        (["--ids", "AT5G66610.1"], "no gene with ID or Name 'AT5G66610.1' (--ids); 'AT5G66610.1' names a mRNA (line 138)"),
        (["--ids", ","], "--ids: no feature ids given"),
        (["--feature", "tRNA"], "no 'tRNA' features (feature types present: CDS, exon, five_prime_UTR, gene,"),
        (["--fasta", str(shared_data / "athaliana_chloroplast.fa")],
         f"{gff3}:5: AT5G66600 is on sequence '{CHR5}', which"),
        (["--fasta", str(cut)], f"{gff3}:113: AT5G66610 ends at 612368, past the end of {CHR5} (610000 bp in"),
        (["--upstream", "0", "--downstream", "0"], "one of them > 0"),
        (["--resume", "--overwrite"], "pass one"),
        (["--plot-top", "-1"], "--plot-top -1: must be 0 (no heatmaps) or more"),
        (["--chunk-bases", "100"], "with --feature the unit is --chunk-features"),
        (["--plot", str(tmp_path / "x.png")], "with --feature use --plot-top K"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main(ism_args(tiny_mlm_dir, fasta, gff3, out, *extra)) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("genolm ism: error: ") and message in err and err.count("\n") == 1, (extra, err)
    region = ["ism", "--model", str(tiny_mlm_dir), "--fasta", str(fasta), "--region", f"{CHR5}:1-10",
              "--out", str(tmp_path / "r.tsv"), "--ids", "AT5G66610"]  # fmt: skip
    assert main(region) == 2
    assert "--ids select or write promoters: use them with --feature" in capsys.readouterr().err
    no_gff3 = ism_args(tiny_mlm_dir, fasta, gff3, out)
    del no_gff3[no_gff3.index("--gff3") : no_gff3.index("--gff3") + 2]
    assert main(no_gff3) == 2
    assert "--feature needs --gff3" in capsys.readouterr().err
    assert list(tmp_path.glob("bad*")) == []


def test_features_by_id_or_name_and_skipped_ones(shared_data):
    """The chloroplast's trans-spliced rps12 has lines on both strands: no 5' end, skipped with a note, and an
    error when asked for by name."""
    from genolm.errors import InputDataError

    gff3 = shared_data / "athaliana_chloroplast.gff3"
    selected, notes = select_features(gff3, "gene")
    assert len(selected) == 128 and len(notes) == 1
    assert "gene-ArthCp047' has lines on both strands" in notes[0] and notes[0].endswith("skipped")
    with pytest.raises(InputDataError, match="gene-ArthCp047' has lines on both strands"):
        select_features(gff3, "gene", ["gene-ArthCp047"])
    # Features are named by ID or Name and reported by ID; trnH (-, 4..76) has 124 of its 200 downstream bases
    # before the genome's first base.
    picked, _ = select_features(gff3, "gene", ["psbA", "gene-ArthCt088"])
    assert [(f.id, f.start, f.end, f.strand) for f in picked] == [("gene-ArthCt088", 4, 76, "-"),
                                                                   ("gene-ArthCp002", 383, 1444, "-")]  # fmt: skip
    trnh, psba = promoter_regions(picked, {"NC_000932.1": 154_478}, 1000, 200)
    assert (trnh.start, trnh.end, trnh.clipped_upstream, trnh.clipped_downstream) == (0, 1076, 0, 124)
    assert (psba.start, psba.end, psba.tss) == (1244, 2444, 1443)


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "genolm", *args], env=env, **kwargs)


def test_sigkill_then_resume_writes_what_an_uninterrupted_run_writes(tiny_mlm_dir, chr5, tmp_path, capsys):
    fasta, gff3 = chr5
    # One gene a chunk, scored one window at a time: chunks slow enough to kill the run between two of them.
    args = ["--ids", "AT5G66600,AT5G66607,AT5G66610,AT5G66620,AT5G66650,AT5G66660", "--chunk-features", "1",
            "--plot-top", "1", "--quiet", "--threads", "1", "--upstream", "150", "--downstream", "30",
            "--batch-size", "1"]  # fmt: skip
    whole = tmp_path / "whole" / "prom"
    assert main(ism_args(tiny_mlm_dir, fasta, gff3, whole, *args)) == 0

    killed = tmp_path / "killed" / "prom"
    table = killed.with_name("prom.parquet")
    folder = parts_folder(table)
    process = run_cli(ism_args(tiny_mlm_dir, fasta, gff3, killed, *args), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(folder.glob("part-*.json"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    done = len(list(folder.glob("part-*.json")))
    assert 2 <= done < 6 and not table.exists()

    with pytest.warns(UserWarning, match="taking over the lock of run pid"):  # the killed run's lock file
        assert main(ism_args(tiny_mlm_dir, fasta, gff3, killed, *args)) == 2  # parts of a killed run: --resume
    capsys.readouterr()
    assert main(ism_args(tiny_mlm_dir, fasta, gff3, killed, *args, "--resume", "--upstream", "151")) == 2
    assert "(promoters differ)" in capsys.readouterr().err  # other regions: not the killed run
    assert main(ism_args(tiny_mlm_dir, fasta, gff3, killed, *args, "--resume")) == 0
    assert pq.read_table(table).equals(pq.read_table(whole.with_name("prom.parquet")))
    assert killed.with_name("prom.summary.tsv").read_bytes() == whole.with_name("prom.summary.tsv").read_bytes()
    assert [p.name for p in killed.with_name("prom.plots").iterdir()] == [
        p.name for p in whole.with_name("prom.plots").iterdir()
    ]
    assert not folder.exists()


@pytest.mark.slow
def test_two_processes_equal_one(tiny_mlm_dir, chr5, tmp_path):
    """`torchrun --nproc_per_node 2 -m genolm ism --feature gene` (gloo, CPU) writes the tables of one process."""
    fasta, gff3 = chr5
    args = ["--chunk-features", "2", "--quiet", "--threads", "1"]
    one = tmp_path / "one" / "prom"
    assert main(ism_args(tiny_mlm_dir, fasta, gff3, one, *args)) == 0
    two = tmp_path / "two" / "prom"
    command = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0", "--rdzv_backend",
               "c10d", "--rdzv_endpoint", "localhost:0", "-m", "genolm", *ism_args(tiny_mlm_dir, fasta, gff3, two,
                                                                                   *args)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    result = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert pq.read_table(two.with_name("prom.parquet")).equals(pq.read_table(one.with_name("prom.parquet")))
    assert two.with_name("prom.summary.tsv").read_bytes() == one.with_name("prom.summary.tsv").read_bytes()
