"""``genolm ism``: one masked forward per token equals the naive mutate / re-tokenise / mask / score loop."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_fasta

from genolm.cli import main
from genolm.inference import SNV, Genome, ism_region, naive_ism_region, score_variants

pytestmark = pytest.mark.usefixtures("one_thread")

CHLOROPLAST = "NC_000932.1"
WINDOW = 16


class ContextHashLM(torch.nn.Module):
    """A stand-in masked LM whose logits are an exact function of the input: integer arithmetic on the
    position-weighted sum of the ids (padding excluded) and the position, so two code paths that build the same
    masked inputs get bit-identical scores, and a wrong window, token or mask position changes them."""

    def __init__(self, vocab_size: int, k: int):
        super().__init__()
        self.config = SimpleNamespace(k=k, max_tokens=1024, vocab_size=vocab_size)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, input_ids, attention_mask=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = torch.arange(input_ids.shape[1])
        context = (input_ids * attention_mask * (positions + 1)).sum(1)  # (batch,) exact integers
        vocab = torch.arange(self.config.vocab_size)
        code = (context[:, None, None] * 31 + positions[None, :, None] * 7 + vocab[None, None, :] * 13) % 1009
        return SimpleNamespace(logits=code.float() / 101.0)


@pytest.fixture(scope="module")
def gapped(tmp_path_factory, shared_data) -> Genome:
    """Real sequence with an N run at 200-204 (leftover single-nucleotide tokens at 198-199), soft-masked bases
    after it and a short record end (403 bp = 67 * 6 + 1)."""
    seq = Genome(shared_data / "athaliana_chloroplast.fa").fetch(CHLOROPLAST, 5000, 5398)
    seq = seq[:200] + "NNNNN" + seq[200:].lower()
    return Genome(write_fasta(tmp_path_factory.mktemp("ism") / "gapped.fa", {"gapped": seq}))


def test_ism_equals_naive_loop_exactly(tokenizer, gapped):
    """Same masked inputs on both paths: with an exact stand-in model the scores are bit-identical, across k-mer
    tokens, leftover single-nucleotide tokens, an N run, a sequence end and both strands."""
    model = ContextHashLM(len(tokenizer), tokenizer.k)
    for rc, (start, end) in [(False, (190, 206)), (True, (194, 204)), (False, (392, 403)), (True, (0, 4))]:
        fast = ism_region(
            model, tokenizer, gapped, "gapped", start, end, window_tokens=WINDOW, rc=rc, batch_size=4
        )
        slow = naive_ism_region(model, tokenizer, gapped, "gapped", start, end, window_tokens=WINDOW, rc=rc)
        np.testing.assert_array_equal(fast.scores, slow.scores)
        assert np.isfinite(fast.scores).sum() > 0


def test_ism_equals_naive_loop_on_tiny_model(mlm, chloroplast):
    """With a real (tiny) transformer the batched path differs from the batch-of-one loop only by float32
    round-off."""
    model, tokenizer = mlm
    fast = ism_region(
        model, tokenizer, chloroplast, CHLOROPLAST, 1000, 1020, window_tokens=WINDOW, batch_size=8
    )
    slow = naive_ism_region(model, tokenizer, chloroplast, CHLOROPLAST, 1000, 1020, window_tokens=WINDOW)
    np.testing.assert_array_equal(np.isnan(fast.scores), np.isnan(slow.scores))
    np.testing.assert_allclose(fast.scores, slow.scores, atol=1e-5, rtol=0)
    assert np.isnan(fast.scores).sum(1).tolist() == [1] * 20  # only the reference base of each row
    ref_columns = np.argwhere(np.isnan(fast.scores))[:, 1]
    assert "".join("ACGT"[c] for c in ref_columns) == chloroplast.fetch(CHLOROPLAST, 1000, 1020).upper()


def test_ism_needs_one_forward_per_token(mlm, chloroplast, monkeypatch):
    ism_module = sys.modules["genolm.inference.ism"]

    model, tokenizer = mlm
    rows = []
    original = ism_module.masked_log_probs

    def counting(model, batch, positions, mask_id):
        rows.append(len(positions))
        return original(model, batch, positions, mask_id)

    monkeypatch.setattr(ism_module, "masked_log_probs", counting)
    result = ism_region(
        model, tokenizer, chloroplast, CHLOROPLAST, 600, 660, window_tokens=WINDOW, batch_size=4
    )
    assert sum(rows) == 10 and np.isfinite(result.scores).sum() == 180  # 60 bp = 10 tokens; 3 * 60 scores


def test_ism_agrees_with_vep(mlm, chloroplast):
    """A substitution scores the same in ISM and as an SNV in VEP (same windows, same rule)."""
    model, tokenizer = mlm
    result = ism_region(model, tokenizer, chloroplast, CHLOROPLAST, 2000, 2012, window_tokens=WINDOW, rc=True)
    table = result.table()
    variants = [SNV(CHLOROPLAST, p - 1, r, a) for p, r, a in zip(table.pos, table.ref, table.alt)]
    scores = score_variants(model, tokenizer, chloroplast, variants, window_tokens=WINDOW, rc=True)
    np.testing.assert_allclose(table.score, [s.llr for s in scores], atol=1e-5)


def test_ism_cli_table_plot_and_naive(tiny_mlm_dir, shared_data, tmp_path, capsys):
    """`genolm ism` writes the tidy table (1-based pos) and a heatmap with GFF3 features; `--naive` agrees."""
    fasta = str(shared_data / "athaliana_chloroplast.fa")
    region = f"{CHLOROPLAST}:1,435-1,446"  # 1-based closed, across the end of gene psbA (383-1444)
    common = [
        "--model",
        str(tiny_mlm_dir),
        "--fasta",
        fasta,
        "--region",
        region,
        "--window-tokens",
        str(WINDOW),
        "--device",
        "cpu",
    ]
    out, plot = tmp_path / "ism.tsv", tmp_path / "ism.png"
    assert (
        main(
            [
                "ism",
                *common,
                "--out",
                str(out),
                "--plot",
                str(plot),
                "--gff3",
                str(shared_data / "athaliana_chloroplast.gff3"),
            ]
        )
        == 0
    )
    assert "substitutions/s" in capsys.readouterr().err
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == ["chrom", "pos", "ref", "alt", "score"]
    assert len(table) == 36 and table.pos.min() == 1435 and table.pos.max() == 1446
    seq = Genome(fasta).fetch(CHLOROPLAST, 1434, 1446)
    assert all(seq[p - 1435] == r for p, r in zip(table.pos, table.ref)) and (table.ref != table.alt).all()
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"

    naive_out = tmp_path / "naive.tsv"
    assert main(["ism", *common, "--out", str(naive_out), "--naive", "--quiet"]) == 0
    naive = pd.read_csv(naive_out, sep="\t")
    np.testing.assert_allclose(table.score, naive.score, atol=1e-5)


def test_ism_rejects_bad_regions(tiny_mlm_dir, shared_data, tmp_path, capsys):
    common = [
        "ism",
        "--model",
        str(tiny_mlm_dir),
        "--fasta",
        str(shared_data / "athaliana_chloroplast.fa"),
        "--out",
        str(tmp_path / "x.tsv"),
        "--quiet",
        "--region",
    ]
    assert main([*common, "chrZ:1-10"]) == 2
    assert "no sequence named 'chrZ'" in capsys.readouterr().err
    assert main([*common, f"{CHLOROPLAST}:10-5"]) == 2
    assert "START <= END" in capsys.readouterr().err
    assert main([*common, f"{CHLOROPLAST}:154470-154479"]) == 2
    assert "past the end" in capsys.readouterr().err


def test_ism_output_discipline(tiny_mlm_dir, shared_data, tmp_path, capsys, monkeypatch):
    """ism once crashed on a missing output folder after all the computing: the folder is created now. An
    output that is the FASTA is refused before computing, and a failing plot leaves neither table nor plot."""
    import hashlib

    fasta = tmp_path / "cp.fa"
    fasta.write_bytes((shared_data / "athaliana_chloroplast.fa").read_bytes())
    common = ["ism", "--model", str(tiny_mlm_dir), "--fasta", str(fasta), "--region", f"{CHLOROPLAST}:1435-1446",
              "--window-tokens", str(WINDOW), "--device", "cpu", "--quiet"]
    out = tmp_path / "new" / "deeper" / "ism.tsv"
    assert main([*common, "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1 + 12 * 3

    before = hashlib.sha256(fasta.read_bytes()).hexdigest()
    assert main([*common, "--out", str(fasta)]) == 2
    err = capsys.readouterr().err
    assert f"output --out {fasta} is also the input --fasta" in err
    assert hashlib.sha256(fasta.read_bytes()).hexdigest() == before

    import genolm.inference.ism as ism_module

    def broken_plot(*args, **kwargs):
        raise RuntimeError("matplotlib fell over")

    monkeypatch.setattr(ism_module, "plot_ism", broken_plot)
    folder = tmp_path / "plotted"
    with pytest.raises(RuntimeError, match="fell over"):
        main([*common, "--out", str(folder / "ism.tsv"), "--plot", str(folder / "ism.png")])
    # Neither table nor plot; the scored chunks stay for --resume, which writes both.
    assert [p.name for p in folder.iterdir()] == ["ism.tsv.genolm-parts"]
    monkeypatch.undo()
    assert main([*common, "--out", str(folder / "ism.tsv"), "--plot", str(folder / "ism.png"), "--resume"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["ism.png", "ism.tsv"]
    assert (folder / "ism.tsv").read_bytes() == out.read_bytes()
