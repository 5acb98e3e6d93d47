"""``genolm vep``: the token grid, masked-marginal scores against a direct recomputation, VCF in and out."""

from __future__ import annotations

import json
import random
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch
from conftest import write_fasta

from genolm.cli import main
from genolm.genome import reverse_complement
from genolm.inference import SNV, Genome, TokenGrid, naive_variant_score, run_vep, score_variants
from genolm.inference.vep import check_variant, validate_vcf

pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW = 16  # tokens: 96 bp of context keeps every forward pass tiny
CHLOROPLAST = "NC_000932.1"


def vcf_text(header_contigs: dict[str, int], rows: list[tuple]) -> str:
    lines = ["##fileformat=VCFv4.2"]
    lines += [f"##contig=<ID={name},length={length}>" for name, length in header_contigs.items()]
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    lines += [
        "\t".join(map(str, (chrom, pos, vid, ref, alt, ".", "PASS", ".")))
        for chrom, pos, vid, ref, alt in rows
    ]
    return "\n".join(lines) + "\n"


def read_tsv(path: Path) -> list[dict[str, str]]:
    rows = path.read_text().splitlines()
    header = rows[0].split("\t")
    return [dict(zip(header, row.split("\t"))) for row in rows[1:]]


@pytest.fixture(scope="module")
def gapped_fasta(tmp_path_factory, shared_data) -> Path:
    """Real chloroplast sequence with an N run and a lower-case stretch: single-nucleotide tokens before the N run
    and at the record end (1,003 bp = 167 * 6 + 1)."""
    seq = Genome(shared_data / "athaliana_chloroplast.fa").fetch(CHLOROPLAST, 0, 1000)
    seq = seq[:400] + "N" * 7 + seq[400:500].lower() + seq[500:996]
    return write_fasta(tmp_path_factory.mktemp("gapped") / "gapped.fa", {"gapped": seq})


# ----------------------------------------------------------------------------------------------------------
# token grid
# ----------------------------------------------------------------------------------------------------------
def test_token_grid_matches_tokenizer_and_windows_keep_phase(tokenizer):
    """The grid's token boundaries equal the tokenizer's, and any window of whole grid tokens tokenises alone to
    the same ids (the window start fixes the phase; genolm starts windows on grid token boundaries)."""
    rng = random.Random(0)
    token_len = np.ones(len(tokenizer), dtype=int)
    token_len[tokenizer.kmer_ids] = tokenizer.k
    for _ in range(150):
        seq = "".join(rng.choice("ACGTACGTACGTacgtNNR") for _ in range(rng.randint(1, 90)))
        grid = TokenGrid.from_sequence(seq, tokenizer.k)
        ids = tokenizer.encode_genome(seq)
        assert grid.n_tokens == len(ids)
        ends = np.cumsum(token_len[ids])
        starts, grid_ends = grid.token_span(np.arange(len(ids)))
        np.testing.assert_array_equal(starts, ends - token_len[ids])
        np.testing.assert_array_equal(grid_ends, ends)
        np.testing.assert_array_equal(
            grid.token_of(np.arange(len(seq))), np.repeat(np.arange(len(ids)), token_len[ids])
        )
        for token in range(len(ids)):
            window = grid.window(token, 5)
            assert window.first_token <= token < window.last_token
            if window.n_tokens == 5 and 2 <= token < len(ids) - 2:
                assert token - window.first_token == 2  # the scored token is the middle one
            np.testing.assert_array_equal(
                tokenizer.encode_genome(seq[window.start : window.end]),
                ids[window.first_token : window.last_token],
            )
        reverse = grid.reverse()
        np.testing.assert_array_equal(
            reverse.token_of(np.arange(len(seq))),
            TokenGrid.from_sequence(reverse_complement(seq), tokenizer.k).token_of(np.arange(len(seq))),
        )


# ----------------------------------------------------------------------------------------------------------
# scores
# ----------------------------------------------------------------------------------------------------------
def test_vep_equals_direct_recomputation_on_real_vcf(mlm, shared_data, tmp_path):
    """Every SNV of the chloroplast VCF, scored in batches, equals the per-variant loop through
    AutoModelForMaskedLM (mutate, re-tokenise, mask, full forward), forward strand and strand-averaged."""
    model, tokenizer = mlm
    genome = Genome(shared_data / "athaliana_chloroplast.fa")
    out = tmp_path / "scores.tsv"
    run_vep(
        model,
        genome,
        shared_data / "athaliana_chloroplast.vcf",
        out,
        tokenizer=tokenizer,
        window_tokens=WINDOW,
        batch_size=8,
        progress=False,
    )
    rows = read_tsv(out)
    assert len(rows) == 83
    snvs = [r for r in rows if len(r["ref"]) == 1 and len(r["alt"]) == 1]
    assert len(snvs) == 52 and all(r["llr"] and not r["skip"] for r in snvs)
    assert all(r["llr"] and not r["skip"] for r in rows if r not in snvs)  # the indels: haplotype PLL scores
    sample = random.Random(1).sample(snvs, 5)
    variants = [SNV(r["chrom"], int(r["pos"]) - 1, r["ref"], r["alt"]) for r in sample]
    both_strands = score_variants(model, tokenizer, genome, variants, window_tokens=WINDOW, rc=True)
    for row, variant, averaged in zip(sample, variants, both_strands):
        direct = naive_variant_score(model, tokenizer, genome, variant, window_tokens=WINDOW)
        assert float(row["llr"]) == pytest.approx(direct, abs=1e-5)
        direct_rc = naive_variant_score(model, tokenizer, genome, variant, window_tokens=WINDOW, rc=True)
        assert averaged.llr == pytest.approx(direct_rc, abs=1e-5)


def test_ref_alt_swap_flips_sign(mlm, shared_data, tmp_path):
    """Scoring ALT->REF on a genome carrying ALT gives exactly minus the REF->ALT score (the masked input is the
    same), on both strands."""
    model, tokenizer = mlm
    genome = Genome(shared_data / "athaliana_chloroplast.fa")
    seq = list(genome.fetch(CHLOROPLAST, 0, genome.lengths[CHLOROPLAST]))
    variants = [
        SNV(CHLOROPLAST, p, seq[p], "ACGT"[("ACGT".index(seq[p]) + 1 + p % 3) % 4])
        for p in (17, 5003, 40_001)
    ]
    variants.append(SNV(CHLOROPLAST, len(seq) - 1, seq[-1], "A" if seq[-1] != "A" else "C"))  # last base
    for v in variants:
        seq[v.pos] = v.alt
    mutated = Genome(write_fasta(tmp_path / "alt.fa", {CHLOROPLAST: "".join(seq)}))
    swapped = [SNV(v.chrom, v.pos, v.alt, v.ref) for v in variants]
    for rc in (False, True):
        forward = score_variants(model, tokenizer, genome, variants, window_tokens=WINDOW, rc=rc)
        backward = score_variants(model, tokenizer, mutated, swapped, window_tokens=WINDOW, rc=rc)
        for f, b in zip(forward, backward):
            assert f.llr != 0 and b.llr == -f.llr


def test_strand_averaged_score_is_symmetric_under_reverse_complement(mlm, shared_data, tmp_path):
    """With rc=True, a variant on a genome and the complemented variant on its reverse complement score alike."""
    model, tokenizer = mlm
    genome = Genome(shared_data / "athaliana_chloroplast.fa")
    length = 3001
    seq = genome.fetch(CHLOROPLAST, 10_000, 10_000 + length)
    forward = Genome(write_fasta(tmp_path / "f.fa", {"x": seq}))
    reverse = Genome(write_fasta(tmp_path / "r.fa", {"x": reverse_complement(seq)}))
    positions = [0, 5, 611, 1500, 2999, 3000]
    variants = [SNV("x", p, seq[p], "T" if seq[p] != "T" else "G") for p in positions]
    mirrored = [
        SNV("x", length - 1 - v.pos, reverse_complement(v.ref), reverse_complement(v.alt)) for v in variants
    ]
    a = score_variants(
        model, tokenizer, forward, variants, window_tokens=WINDOW, rc=True, embedding_distance=True
    )
    b = score_variants(
        model, tokenizer, reverse, mirrored, window_tokens=WINDOW, rc=True, embedding_distance=True
    )
    np.testing.assert_allclose([s.llr for s in a], [s.llr for s in b], atol=1e-5)
    np.testing.assert_allclose([s.emb_dist for s in a], [s.emb_dist for s in b], atol=1e-5)
    single = score_variants(model, tokenizer, forward, variants, window_tokens=WINDOW)
    assert not np.allclose([s.llr for s in a], [s.llr for s in single])  # the reverse strand does contribute


def test_single_nucleotide_tokens_and_n_runs(mlm, gapped_fasta):
    """Bases left over before an N run and at the record end are single-nucleotide tokens; they are scored with
    the A/C/G/T tokens and agree with the direct loop. Variants in the N run or to N are tagged."""
    model, tokenizer = mlm
    genome = Genome(gapped_fasta)
    seq = genome.fetch("gapped", 0, genome.lengths["gapped"]).upper()
    grid = genome.grid("gapped", tokenizer.k)
    leftover = [
        p
        for p in range(len(seq))
        if np.subtract(*grid.token_span(grid.token_of(p))[::-1]) == 1 and seq[p] != "N"
    ]
    assert (
        396 in leftover and len(seq) - 1 in leftover
    )  # 400 = 66 * 6 + 4 bases before the N run; the last base
    positions = [
        396,
        399,
        407,
        450,
        len(seq) - 1,
        0,
        600,
    ]  # 407: first base after the N run; 450: soft-masked
    variants = [SNV("gapped", p, seq[p], "G" if seq[p] != "G" else "A") for p in positions]
    scores = score_variants(model, tokenizer, genome, variants, window_tokens=WINDOW, rc=True, batch_size=3)
    for variant, score in zip(variants, scores):
        direct = naive_variant_score(model, tokenizer, genome, variant, window_tokens=WINDOW, rc=True)
        assert score.skip is None and score.llr == pytest.approx(direct, abs=1e-5)
    assert check_variant(genome, SNV("gapped", 403, "N", "A")) == "ref_not_acgt"
    assert check_variant(genome, SNV("gapped", 450, seq[450].lower(), "N")) == "alt_not_acgt"
    assert check_variant(genome, SNV("gapped", 450, seq[450], "R")) == "alt_not_acgt"


def test_variants_in_one_token_share_one_forward(mlm, chloroplast, monkeypatch):
    """All SNVs inside one token (any base, any ALT) come from a single masked window."""
    import genolm.inference.vep as vep

    model, tokenizer = mlm
    calls = []
    original = vep.masked_log_probs

    def counting(model, batch, positions, mask_id):
        calls.append(len(positions))
        return original(model, batch, positions, mask_id)

    monkeypatch.setattr(vep, "masked_log_probs", counting)
    seq = chloroplast.fetch(CHLOROPLAST, 600, 606)  # one grid token: 600 = 100 * 6
    variants = [SNV(CHLOROPLAST, 600 + i, b, a) for i, b in enumerate(seq) for a in "ACGT" if a != b]
    scores = score_variants(model, tokenizer, chloroplast, variants, window_tokens=WINDOW, batch_size=64)
    assert calls == [1] and len(scores) == 18 and all(s.llr is not None for s in scores)


# ----------------------------------------------------------------------------------------------------------
# VCF handling
# ----------------------------------------------------------------------------------------------------------
def test_output_vcf_keeps_every_record_with_reasons(tiny_mlm_dir, shared_data, tmp_path, capsys):
    """The output parses with pysam, holds the input records in order, and each unscored one says why: a planted
    wrong REF, unknown contig, ALT N, missing ALT and multi-allelic record, beside the real indels; ##contig lines are
    missing from the header, as in the grenepipe source VCF."""
    source = (shared_data / "athaliana_chloroplast.vcf").read_text().splitlines(keepends=True)
    header = [line for line in source if line.startswith("#") and not line.startswith("##contig")]
    records = [line.split("\t") for line in source if not line.startswith("#")]
    snv_rows = [i for i, r in enumerate(records) if len(r[3]) == 1 and len(r[4]) == 1]
    wrong_ref, unknown, alt_n, multi, no_alt = snv_rows[:5]
    records[wrong_ref][3] = {"A": "C", "C": "G", "G": "T", "T": "A"}[records[wrong_ref][3]]
    records[unknown][0] = "chloroplast"  # the name in the original TAIR10 VCF, absent from the FASTA
    records[alt_n][4] = "N"
    records[no_alt][4] = "."
    ref = records[multi][3]
    records[multi][4] = ",".join(
        [records[multi][4], "*", next(b for b in "ACGT" if b not in (ref, records[multi][4]))]
    )
    vcf = tmp_path / "planted.vcf"
    vcf.write_text("".join(header) + "".join("\t".join(r) for r in records))

    out = tmp_path / "scored.vcf.gz"
    code = main(
        [
            "vep",
            "--model",
            str(tiny_mlm_dir),
            "--fasta",
            str(shared_data / "athaliana_chloroplast.fa"),
            "--vcf",
            str(vcf),
            "--out",
            str(out),
            "--window-tokens",
            str(WINDOW),
            "--embedding-distance",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert "variants/s" in capsys.readouterr().err
    with pysam.VariantFile(str(out)) as scored:
        info = scored.header.info
        assert info["GENOLM_LLR"].number == "A" and info["GENOLM_LLR"].type == "Float"
        assert info["GENOLM_EMB_DIST"].number == "A" and info["GENOLM_SKIP"].type == "String"
        output = list(scored)
    assert [(r.chrom, r.pos, r.ref) for r in output] == [(r[0], int(r[1]), r[3]) for r in records]
    assert [",".join(r.alts or ".") for r in output] == [r[4] for r in records]
    for i, (record, row) in enumerate(zip(output, records)):
        skip = record.info.get("GENOLM_SKIP")
        if i == wrong_ref:
            assert skip == "ref_mismatch" and "GENOLM_LLR" not in record.info
        elif i == unknown:
            assert skip == "unknown_contig"
        elif i == alt_n:
            assert skip == "alt_not_acgt"
        elif i == no_alt:
            assert skip == "no_alt"
        elif i == multi:  # first and third ALT scored, '*' is not
            llr = record.info["GENOLM_LLR"]
            assert skip == "spanning_deletion" and llr[0] is not None and llr[1] is None and llr[2] is not None
        else:  # SNVs and indels
            assert skip is None and np.isfinite(record.info["GENOLM_LLR"][0])
            assert record.info["GENOLM_EMB_DIST"][0] >= 0
        # The input's own fields survive.
        assert record.info["DP"] == int(dict(kv.split("=") for kv in row[7].split(";") if "=" in kv)["DP"])
        assert len(record.samples) == 3


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("NC_000932.1\t12x\t.\tA\tG\t.\tPASS\t.", "POS '12x'"),
        ("NC_000932.1\t100\t.\tA\tG\t.\tPASS", "expected 8 tab-separated columns, found 7"),
        ("NC_000932.1\t100\t.\tA1\tG\t.\tPASS\t.", "REF 'A1'"),
        ("NC_000932.1 100 . A G . PASS .", "expected 8 tab-separated columns, found 1"),
        ("NC_000932.1\t100\t.\tA\tG\tq1\tPASS\t.", "QUAL 'q1'"),
        ("NC_000932.1\t100\t.\tA\tG\t.\tPASS\tDP=abc", "INFO DP='abc' is not of Type=Integer"),
    ],
)
def test_malformed_vcf_line_fails_with_line_number(
    tiny_mlm_dir, shared_data, tmp_path, capsys, bad_line, message
):
    rows = [("NC_000932.1", 4448, ".", "C", "G"), ("NC_000932.1", 4870, ".", "G", "T")]
    text = vcf_text({"NC_000932.1": 154478}, rows).splitlines()
    text.insert(1, '##INFO=<ID=DP,Number=1,Type=Integer,Description="Depth">')
    text.insert(4, bad_line)  # line 5: the first record, after 3 meta lines and #CHROM
    vcf = tmp_path / "bad.vcf"
    vcf.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=rf"bad\.vcf:5: {message}"):
        validate_vcf(vcf)
    code = main(
        [
            "vep",
            "--model",
            str(tiny_mlm_dir),
            "--fasta",
            str(shared_data / "athaliana_chloroplast.fa"),
            "--vcf",
            str(vcf),
            "--out",
            str(tmp_path / "o.vcf"),
            "--quiet",
        ]
    )
    assert code == 2
    assert "bad.vcf:5:" in capsys.readouterr().err


def test_vcf_without_header_or_fileformat_fails(tmp_path):
    vcf = tmp_path / "x.vcf"
    vcf.write_text("NC_000932.1\t100\t.\tA\tG\t.\tPASS\t.\n")
    with pytest.raises(ValueError, match=r"x\.vcf:1: the first line must be ##fileformat"):
        validate_vcf(vcf)
    vcf.write_text("##fileformat=VCFv4.2\nNC_000932.1\t100\t.\tA\tG\t.\tPASS\t.\n")
    with pytest.raises(ValueError, match=r"x\.vcf:2: record before the #CHROM header line"):
        validate_vcf(vcf)


def test_vep_on_chr5_vcf_gz_reference(mlm, shared_data, tmp_path):
    """The bgzip, soft-masked Chr5 excerpt: every REF matches (case ignored), SNVs and indels scored."""
    model, tokenizer = mlm
    out = tmp_path / "chr5.tsv"
    report = run_vep(
        model,
        shared_data / "athaliana_chr5_tail.fa.gz",
        shared_data / "athaliana_chr5_tail.vcf",
        out,
        tokenizer=tokenizer,
        window_tokens=WINDOW,
        progress=False,
    )
    assert report.records == 45 and report.scored == 45 and report.skipped == {}
    assert len(read_tsv(out)) == 45


def test_score_variants_requires_a_window_the_model_takes(mlm, chloroplast):
    model, tokenizer = mlm
    with pytest.raises(ValueError, match="window_tokens=5000"):
        score_variants(model, tokenizer, chloroplast, [SNV(CHLOROPLAST, 10, "A", "C")], window_tokens=5000)
    with torch.inference_mode():
        assert check_variant(chloroplast, SNV(CHLOROPLAST, 154_478, "A", "C")) == "pos_out_of_range"


# ----------------------------------------------------------------------------------------------------------
# Output discipline and real-world VCFs
# ----------------------------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def chr5_vcf(shared_data: Path, edit) -> tuple[list[str], list[list[str]]]:
    """The real Chr5 VCF's header lines and records (split at tabs), after ``edit(header, records)``."""
    source = (shared_data / "athaliana_chr5_tail.vcf").read_text().splitlines(keepends=True)
    header = [line for line in source if line.startswith("#")]
    records = [line.split("\t") for line in source if not line.startswith("#")]
    edit(header, records)
    return header, records


def vep_cli(model_dir, shared_data, vcf, out, *extra) -> int:
    from genolm.errors import run_reporting_user_errors

    argv = ["vep", "--model", str(model_dir), "--fasta", str(shared_data / "athaliana_chr5_tail.fa.gz"),
            "--vcf", str(vcf), "--out", str(out), "--window-tokens", str(WINDOW), "--device", "cpu", "--quiet",
            *extra]
    return run_reporting_user_errors("genolm", lambda: main(argv))


def test_vep_refuses_to_write_over_its_input(tiny_mlm_dir, shared_data, tmp_path, capsys):
    """`--out X --vcf X` once destroyed the input VCF (3,078 records left as 109): now refused before any
    computing, the input byte for byte unchanged."""
    vcf = tmp_path / "calls.vcf"
    vcf.write_bytes((shared_data / "athaliana_chr5_tail.vcf").read_bytes())
    before = sha256(vcf)
    assert vep_cli(tiny_mlm_dir, shared_data, vcf, tmp_path / "." / "calls.vcf") == 2
    err = capsys.readouterr().err
    assert "is also the input --vcf" in err and str(vcf) in err and len(err.strip().splitlines()) == 1
    assert sha256(vcf) == before


def _symbolic(header, records):
    records[1][4] = "<DEL>"
    records[1][7] = f"SVTYPE=DEL;END={int(records[1][1]) + 100}"
    records[2][4] = "<INS>"  # no END: htslib adds one


def _undeclared_info(header, records):
    records[3][7] += ";CALLER=gatk"
    records[4][7] += ";SOMATIC"


def _undeclared_filter(header, records):
    records[5][6] = "lowDepth"


def _genolm_llr_of_another_type(header, records):
    header.insert(1, '##INFO=<ID=GENOLM_LLR,Number=1,Type=String,Description="an older tool">\n')
    records[6][7] += ";GENOLM_LLR=high"


@pytest.mark.parametrize(
    "edit", [_symbolic, _undeclared_info, _undeclared_filter, _genolm_llr_of_another_type],
    ids=["symbolic_alt", "undeclared_info", "undeclared_filter", "genolm_llr_string"],
)
@pytest.mark.parametrize("suffix", [".vcf", ".vcf.gz"])
def test_vep_writes_every_record_of_real_world_vcfs(tiny_mlm_dir, shared_data, tmp_path, edit, suffix):
    """Symbolic ALTs, INFO keys and FILTERs the header does not declare, and a GENOLM_LLR of another type made
    htslib fail mid-file ("Can't write record") and left a truncated output: now every record comes out, in
    order, with its fields."""
    header, records = chr5_vcf(shared_data, edit)
    vcf = tmp_path / "edited.vcf"
    vcf.write_text("".join(header) + "".join("\t".join(r) for r in records))
    out = tmp_path / f"scored{suffix}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = run_vep(tiny_mlm_dir, shared_data / "athaliana_chr5_tail.fa.gz", vcf, out,
                         window_tokens=WINDOW, device="cpu", progress=False)
    assert report.records == len(records) == 45
    with pysam.VariantFile(str(out)) as scored:
        assert scored.header.info["GENOLM_LLR"].type == "Float" and scored.header.info["GENOLM_LLR"].number == "A"
        output = list(scored)
    assert [(r.chrom, r.pos, r.ref, ",".join(r.alts)) for r in output] == [
        (r[0], int(r[1]), r[3], r[4]) for r in records
    ]
    assert [r.filter.keys() for r in output] == [r[6].split(";") for r in records]
    for i, record in enumerate(output):
        if edit is _symbolic and i in (1, 2):  # a 100-bp <DEL> in 16-token windows; an <INS> without sequence
            assert record.info["GENOLM_SKIP"] == ("too_long" if i == 1 else "unresolved_symbolic")
            assert "GENOLM_LLR" not in record.info
        else:
            assert "GENOLM_SKIP" not in record.info and np.isfinite(record.info["GENOLM_LLR"][0])
    if edit is _undeclared_info:
        assert output[3].info["CALLER"] == ("gatk",) and output[4].info["SOMATIC"] is True
    if edit is _symbolic:
        assert output[1].stop == int(records[1][1]) + 100 and output[1].info["SVTYPE"] == ("DEL",)
    if edit is _genolm_llr_of_another_type:
        assert np.isfinite(output[6].info["GENOLM_LLR"][0])
        assert any("INFO GENOLM_LLR is declared Number=1,Type=String; replacing" in str(w.message) for w in caught)


def test_vep_reads_plain_gzip_vcf(tiny_mlm_dir, shared_data, tmp_path):
    """A VCF compressed with gzip (not bgzip) gave a NotImplementedError traceback: it is read through Python's
    gzip now."""
    import gzip

    vcf = tmp_path / "calls.vcf.gz"
    with gzip.open(vcf, "wb") as handle:
        handle.write((shared_data / "athaliana_chr5_tail.vcf").read_bytes())
    out = tmp_path / "scored.tsv"
    report = run_vep(tiny_mlm_dir, shared_data / "athaliana_chr5_tail.fa.gz", vcf, out,
                     window_tokens=WINDOW, device="cpu", progress=False)
    assert report.records == 45 and report.scored == 45 and len(read_tsv(out)) == 45


def test_vep_error_midway_leaves_nothing_at_the_output(tiny_mlm_dir, shared_data, tmp_path, monkeypatch):
    """No output after an error midway: only the finished chunks' parts, which ``resume=True`` continues from
    to the output of an uninterrupted run."""
    import genolm.inference.vep as vep_module

    calls = []
    real = vep_module.score_variants

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the accelerator fell over")
        return real(*args, **kwargs)

    monkeypatch.setattr(vep_module, "score_variants", failing)
    out = tmp_path / "scored.vcf.gz"
    with pytest.raises(RuntimeError, match="fell over"):
        run_vep(tiny_mlm_dir, shared_data / "athaliana_chr5_tail.fa.gz", shared_data / "athaliana_chr5_tail.vcf",
                out, window_tokens=WINDOW, device="cpu", chunk_records=10, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scored.vcf.gz.genolm-parts"]
    parts = tmp_path / "scored.vcf.gz.genolm-parts"
    assert sorted(p.name for p in parts.iterdir()) == ["journal.json", "part-00000000-scored.vcf.gz",
                                                       "part-00000000.json"]
    monkeypatch.setattr(vep_module, "score_variants", real)
    calls.clear()
    kwargs = dict(window_tokens=WINDOW, device="cpu", chunk_records=10, progress=False)
    report = run_vep(tiny_mlm_dir, shared_data / "athaliana_chr5_tail.fa.gz",
                     shared_data / "athaliana_chr5_tail.vcf", out, resume=True, **kwargs)
    assert report.records == 45 and not parts.exists()
    whole = tmp_path / "whole.vcf.gz"
    run_vep(tiny_mlm_dir, shared_data / "athaliana_chr5_tail.fa.gz", shared_data / "athaliana_chr5_tail.vcf",
            whole, **kwargs)
    assert out.read_bytes() == whole.read_bytes()


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs, filled up to its last 8 KiB (needs root; skipped where mounting is impossible)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (disk / "filler").write_bytes(b"\0" * (256 - 8) * 1024)
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_vep_on_a_full_disk_writes_nothing_and_says_so(tiny_mlm_dir, shared_data, small_disk, capsys):
    out = small_disk / "scored.vcf"
    assert vep_cli(tiny_mlm_dir, shared_data, shared_data / "athaliana_chr5_tail.vcf", out) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("genolm vep: error: no space left on the device")
    assert f"writing {out};" in errors[0]
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


# ----------------------------------------------------------------------------------------------------------
# Which checkpoints vep/ism/annotate take
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny English BERT masked LM with a WordPiece vocabulary (built here, nothing downloaded)."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    folder = tmp_path_factory.mktemp("bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "##s", "a", "c", "g", "t"]
    (folder / "vocab.txt").write_text("".join(w + "\n" for w in words))
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    config = BertConfig(vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64)
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_vep_and_ism_refuse_a_bert_checkpoint(tiny_bert_dir, shared_data, tmp_path, capsys):
    out = tmp_path / "scored.tsv"
    assert vep_cli(tiny_bert_dir, shared_data, shared_data / "athaliana_chr5_tail.vcf", out) == 2
    err = capsys.readouterr().err
    assert "model type 'bert' with a 15-token WordPiece vocabulary is not a nucleotide k-mer model" in err
    assert str(tiny_bert_dir) in err and not out.exists()
    code = main(["ism", "--model", str(tiny_bert_dir), "--fasta", str(shared_data / "athaliana_chloroplast.fa"),
                 "--region", "NC_000932.1:1-30", "--out", str(out), "--device", "cpu", "--quiet"])
    assert code == 2 and "model type 'bert'" in capsys.readouterr().err and not out.exists()


def test_vep_refuses_tokenizer_and_model_of_different_vocabularies(tiny_mlm_dir, shared_data, tmp_path, capsys):
    import shutil

    folder = tmp_path / "mixed"
    shutil.copytree(tiny_mlm_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    from genolm import GenoLMConfig, GenoLMForMaskedLM

    config.pop("architectures", None)
    GenoLMForMaskedLM(GenoLMConfig(**{**config, "vocab_size": 30522})).save_pretrained(folder)
    out = tmp_path / "scored.tsv"
    assert vep_cli(folder, shared_data, shared_data / "athaliana_chr5_tail.vcf", out) == 2
    err = capsys.readouterr().err
    assert f"{folder}: the model has a 30522-token vocabulary but the tokenizer has 4107 tokens" in err
    assert not out.exists()


def test_vep_names_a_corrupt_weights_file(tiny_mlm_dir, shared_data, tmp_path, capsys):
    import shutil

    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_mlm_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    out = tmp_path / "scored.tsv"
    assert vep_cli(folder, shared_data, shared_data / "athaliana_chr5_tail.vcf", out) == 2
    err = capsys.readouterr().err
    assert f"{weights}: cannot read the weights (corrupt or truncated safetensors file)" in err
    assert not out.exists()


def test_vep_refuses_a_protein_esm_checkpoint(shared_data, tmp_path, capsys):
    """ESM is a model type NT shares with protein models: the vocabulary must be a nucleotide k-mer one."""
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    folder = tmp_path / "protein_esm"
    folder.mkdir()
    amino = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWC", "<mask>"]
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in amino))
    config = EsmConfig(vocab_size=len(amino), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=16, max_position_embeddings=64, pad_token_id=1, mask_token_id=len(amino) - 1)
    EsmForMaskedLM(config).save_pretrained(folder)
    EsmTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    out = tmp_path / "scored.tsv"
    assert vep_cli(folder, shared_data, shared_data / "athaliana_chr5_tail.vcf", out) == 2
    err = capsys.readouterr().err
    assert f"{folder}: the tokenizer is not a nucleotide k-mer vocabulary" in err and "25 tokens" in err
    assert not out.exists()


@pytest.mark.slow
def test_vep_cli_compile_gives_the_eager_scores(tiny_mlm_dir, shared_data, tmp_path):
    """``genolm vep --compile`` scores every SNV of the chloroplast VCF as the eager run does, within 1e-5."""
    import pandas as pd

    tables = {}
    for flag in ("--compile", "--no-compile"):
        out = tmp_path / f"{flag.strip('-')}.tsv"
        argv = ["vep", "--model", str(tiny_mlm_dir), "--fasta", str(shared_data / "athaliana_chloroplast.fa"),
                "--vcf", str(shared_data / "athaliana_chloroplast.vcf"), "--out", str(out)]  # fmt: skip
        assert main([*argv, flag, "--window-tokens", "64", "--device", "cpu", "--quiet"]) == 0
        tables[flag] = pd.read_csv(out, sep="\t")
    compiled, eager = tables["--compile"], tables["--no-compile"]
    assert compiled["llr"].notna().sum() == eager["llr"].notna().sum() > 40
    np.testing.assert_allclose(compiled["llr"].to_numpy(float), eager["llr"].to_numpy(float), atol=1e-5, equal_nan=True)
