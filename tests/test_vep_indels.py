"""``genolm vep`` beyond SNVs: indels, MNVs and symbolic SVs scored by the PLL ratio of their haplotype windows,
skip reasons, and percentiles among background SNVs; on the real Arabidopsis Chr5 sequence."""

from __future__ import annotations

import numpy as np
import pysam
import pytest
import torch
import torch.nn.functional as F
from conftest import write_fasta
from scipy.stats import percentileofscore

from genolm.cli import main
from genolm.genome import reverse_complement
from genolm.inference import SNV, Genome, score_variants
from genolm.inference.variants import Edit, Variant, haplotype_windows, resolve
from genolm.inference.vep import background_scores, background_snvs, check_variant

pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW = 16  # tokens: 96 bp of context, middles up to 8 tokens (48 bp)
CHR5 = "Chr5_25975502_26975502"


@pytest.fixture(scope="module")
def chr5(shared_data) -> Genome:
    return Genome(shared_data / "athaliana_chr5_tail.fa.gz")


@pytest.fixture(scope="module")
def chr5_seq(chr5) -> str:
    return chr5.fetch(CHR5, 0, chr5.lengths[CHR5])


def homopolymer(seq: str, start: int, length: int = 5) -> tuple[int, int]:
    """The first run of one base, ``length`` or longer, at or after ``start``: ``(run_start, run_end)``."""
    upper = seq.upper()
    i = start
    while True:
        j = i
        while upper[j] == upper[i]:
            j += 1
        if j - i >= length:
            return i, j
        i = j


# ----------------------------------------------------------------------------------------------------------
# scores
# ----------------------------------------------------------------------------------------------------------
def test_deletion_scores_minus_the_insertion_on_the_genome_carrying_it(mlm, chr5, chr5_seq, tmp_path):
    """Deleting bases from Chr5 scores exactly minus inserting them back into the Chr5 that carries the deletions,
    on one strand and strand-averaged, with the same embedding distance; a deletion in a homopolymer is written
    at the run's start and the insertion at its end (left-alignment makes them the same change)."""
    model, tokenizer = mlm
    seq = chr5_seq
    run_start, run_end = homopolymer(seq, 300_000)
    deletions = [  # (start, end) of the deleted bases, 0-based; REF/ALT written with the base before
        (74_553, 74_556),  # TTCG -> T of the shared VCF (POS 74,553)
        (200_001, 200_021),  # 20 bp
        (run_start, run_start + 1),  # one base of a homopolymer
        (468_041, 468_042),  # AC -> A of the shared VCF (POS 468,041)
        (700_000, 700_047),  # 47 bp: 7 k-mers and 5 single bases, a 12-token middle
    ]
    variants = [SNV(CHR5, s - 1, seq[s - 1 : e], seq[s - 1]) for s, e in deletions]
    carried = seq
    for s, e in reversed(deletions):
        carried = carried[:s] + carried[e:]
    genome_del = Genome(write_fasta(tmp_path / "chr5_del.fa", {CHR5: carried}))
    insertions = []
    shift = 0
    for s, e in deletions:
        p = s - 1 - shift  # the base before the deletion, on the carrying genome
        if (s, e) == (run_start, run_start + 1):  # after the shortened run's last base instead
            p = run_end - 2 - shift
            insertions.append(SNV(CHR5, p, carried[p], carried[p] + seq[run_start]))
        else:
            insertions.append(SNV(CHR5, p, carried[p], carried[p] + seq[s:e]))
        shift += e - s
    assert [resolve(genome_del, Variant.from_alleles(v.chrom, v.pos, v.ref, v.alt)) for v in insertions] == [
        Edit(s - sum(e0 - s0 for s0, e0 in deletions[:i]), s - sum(e0 - s0 for s0, e0 in deletions[:i]),
             seq[s:e].upper())
        for i, (s, e) in enumerate(deletions)
    ]
    for rc in (False, True):
        forward = score_variants(model, tokenizer, chr5, variants, window_tokens=WINDOW, rc=rc,
                                 embedding_distance=True, batch_size=7)
        backward = score_variants(model, tokenizer, genome_del, insertions, window_tokens=WINDOW, rc=rc,
                                  embedding_distance=True, batch_size=16)
        for f, b in zip(forward, backward):
            assert f.skip is None and b.skip is None and f.llr != 0
            assert b.llr == pytest.approx(-f.llr, abs=1e-5)
            assert b.emb_dist == pytest.approx(f.emb_dist, abs=1e-5) and f.emb_dist > 0


def naive_pll(model, tokenizer, windows, allele: str) -> float:
    """PLL of one haplotype window, directly: tokenise its three pieces with the tokenizer's ``__call__``, mask
    each changed token and one flank token each side in turn, run the full model, sum the log-probabilities."""
    middle = windows.ref_middle if allele == "ref" else windows.alt_middle
    pieces = [tokenizer(piece)["input_ids"][1:] if piece else [] for piece in (windows.left, middle, windows.right)]
    ids = [tokenizer.cls_token_id, *pieces[0], *pieces[1], *pieces[2]]
    first = len(pieces[0]) - (1 if pieces[0] else 0)
    last = len(pieces[0]) + len(pieces[1]) + (1 if pieces[2] else 0)
    total = 0.0
    for token in range(first, last):
        masked = list(ids)
        masked[token + 1] = tokenizer.mask_token_id
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([masked])).logits[0, token + 1]
        total += float(F.log_softmax(logits.float(), dim=-1)[ids[token + 1]])
    return total


def test_pll_score_equals_a_direct_loop(mlm, chr5, chr5_seq):
    """Batched PLL ratios equal the per-token loop through the full model, on both strands; the windows are the
    reference and the mutated sequence around the variant, centred, the longer one exactly WINDOW tokens."""
    model, tokenizer = mlm
    seq, k = chr5_seq, tokenizer.k
    variants = [
        SNV(CHR5, 468_065, "A", "ACATTCAAGAAAGGCAAAATTTGCTC"),  # the VCF's 25-bp insertion (POS 468,066)
        SNV(CHR5, 91_297, "GC", "G"),  # a VCF deletion (POS 91,298)
        SNV(CHR5, 150_000, seq[150_000:150_004], reverse_complement(seq[150_000:150_004])),  # an MNV
        SNV(CHR5, 40, seq[40:47], seq[40]),  # near the record start: the left flank is short
    ]
    scores = score_variants(model, tokenizer, chr5, variants, window_tokens=WINDOW, rc=True, batch_size=5)
    for variant, score in zip(variants, scores):
        edit = resolve(chr5, Variant.from_alleles(variant.chrom, variant.pos, variant.ref, variant.alt))
        mutated = seq[: variant.pos] + variant.alt + seq[variant.pos + len(variant.ref) :]
        naive = []
        for strand in ("+", "-"):
            windows = haplotype_windows(chr5, CHR5, edit, strand, tokenizer, WINDOW)
            ref, alt = windows.sequence("ref"), windows.sequence("alt")
            if strand == "+":
                start = edit.start - len(windows.left)
                assert ref == seq[start : edit.end + len(windows.right)].upper()
                assert alt == mutated[start : start + len(alt)].upper()
                assert len(windows.left) % k == 0 and windows.left == seq[start : edit.start].upper()
            else:
                assert windows.left == reverse_complement(seq[edit.end : edit.end + len(windows.left)]).upper()
                assert windows.right == reverse_complement(seq[edit.start - len(windows.right) : edit.start]).upper()
            n_ref, n_alt = len(windows.ids("ref")), len(windows.ids("alt"))
            assert max(n_ref, n_alt) == WINDOW
            n_middle = max(len(windows.ref_middle_ids), len(windows.alt_middle_ids))
            if variant.pos > 1000:  # centred: the left flank takes (W - M) // 2 tokens
                assert len(windows.left_ids) == (WINDOW - n_middle) // 2
            naive.append(naive_pll(model, tokenizer, windows, "alt") - naive_pll(model, tokenizer, windows, "ref"))
        assert score.skip is None and score.llr == pytest.approx(np.mean(naive), abs=1e-4)
        forward_only = score_variants(model, tokenizer, chr5, [variant], window_tokens=WINDOW)[0]
        assert forward_only.llr == pytest.approx(naive[0], abs=1e-4)


def test_strand_averaged_indel_score_is_symmetric_under_reverse_complement(mlm, chr5, tmp_path):
    """With rc=True, an indel on a Chr5 excerpt and the mirrored indel on its reverse complement score alike (the
    minus-strand windows of one are the plus-strand windows of the other)."""
    model, tokenizer = mlm
    seq = chr5.fetch(CHR5, 600_000, 603_001).upper()
    forward = Genome(write_fasta(tmp_path / "f.fa", {"x": seq}))
    reverse = Genome(write_fasta(tmp_path / "r.fa", {"x": reverse_complement(seq)}))
    length = len(seq)
    changes = []  # (start, end, inserted): deletions and insertions that cannot slide left or right
    for s, size in ((700, 5), (1500, 13), (2990, 4)):
        while seq[s - 1] == seq[s + size - 1] or seq[s + size] == seq[s]:
            s += 1
        changes.append((s, s + size, ""))
    p = 2000
    while seq[p - 1] == "A" or seq[p] == "G":
        p += 1
    changes.append((p, p, "GATTACA"))
    variants, mirrored = [], []
    for s, e, inserted in changes:
        variants.append(SNV("x", s - 1, seq[s - 1 : e], seq[s - 1] + inserted))
        # On the reverse complement the base after the change pads it on the left.
        m_start = length - e - 1
        m_ref = reverse_complement(seq[s : e + 1])
        mirrored.append(SNV("x", m_start, m_ref, m_ref[0] + reverse_complement(inserted)))
    a = score_variants(model, tokenizer, forward, variants, window_tokens=WINDOW, rc=True, embedding_distance=True)
    b = score_variants(model, tokenizer, reverse, mirrored, window_tokens=WINDOW, rc=True, embedding_distance=True)
    assert all(x.skip is None and y.skip is None for x, y in zip(a, b))
    np.testing.assert_allclose([x.llr for x in a], [y.llr for y in b], atol=1e-5)
    np.testing.assert_allclose([x.emb_dist for x in a], [y.emb_dist for y in b], atol=1e-5)
    single = score_variants(model, tokenizer, forward, variants, window_tokens=WINDOW)
    assert not np.allclose([x.llr for x in a], [x.llr for x in single])  # the reverse strand does contribute


def test_symbolic_alleles_score_as_their_explicit_sequences(mlm, chr5, chr5_seq):
    """<DEL> (END or SVLEN), <DUP>, <INV> and <INS> with SVINSSEQ score as the same change written as REF/ALT
    sequences; an MNV that differs at one base scores as that SNV."""
    model, tokenizer = mlm
    seq = chr5_seq
    p, n = 250_000, 12  # the padding base and the segment length
    segment = seq[p + 1 : p + 1 + n]
    inserted = "ACGTTGCAAT"
    pairs = [
        (Variant.from_alleles(CHR5, p, seq[p], "<DEL>", end=p + 1 + n), SNV(CHR5, p, seq[p : p + 1 + n], seq[p])),
        (Variant.from_alleles(CHR5, p, seq[p], "<DEL>", end=p + 1, svlen=-n),
         SNV(CHR5, p, seq[p : p + 1 + n], seq[p])),
        (Variant.from_alleles(CHR5, p, seq[p], "<DUP:TANDEM>", end=p + 1 + n), SNV(CHR5, p, seq[p], seq[p] + segment)),
        (Variant.from_alleles(CHR5, p, seq[p], "<INV>", svlen=n),
         SNV(CHR5, p, seq[p : p + 1 + n], seq[p] + reverse_complement(segment))),
        (Variant.from_alleles(CHR5, p, seq[p], "<INS>", inserted=inserted), SNV(CHR5, p, seq[p], seq[p] + inserted)),
        (SNV(CHR5, p, seq[p : p + 3], seq[p] + ("A" if seq[p + 1] != "A" else "C") + seq[p + 2]),
         SNV(CHR5, p + 1, seq[p + 1], "A" if seq[p + 1] != "A" else "C")),
    ]
    assert [v.kind for v, _ in pairs[:5]] == ["DEL", "DEL", "DUP", "INV", "INS"]
    for rc in (False, True):
        scores = score_variants(model, tokenizer, chr5, [v for pair in pairs for v in pair], window_tokens=WINDOW,
                                rc=rc, embedding_distance=True)
        for symbolic, explicit in zip(scores[0::2], scores[1::2]):
            assert symbolic.skip is None and explicit.skip is None and symbolic.llr != 0
            assert symbolic.llr == pytest.approx(explicit.llr, abs=1e-5)
            assert symbolic.emb_dist == pytest.approx(explicit.emb_dist, abs=1e-5)


def test_unscorable_variants_carry_their_reason(mlm, chr5, chr5_seq, tmp_path):
    model, tokenizer = mlm
    seq = chr5_seq
    p = 120_000
    cases = {
        "too_long": [
            SNV(CHR5, p, seq[p], seq[p] + "ACGT" * 13),  # 52 bp: 9 tokens > 16 // 2
            Variant.from_alleles(CHR5, p, seq[p], "<DEL>", end=900_000),  # decided without reading 780 kb
            Variant.from_alleles(CHR5, p, seq[p], "<INV>", end=p + 60),
        ],
        "unresolved_symbolic": [
            Variant.from_alleles(CHR5, p, seq[p], "<CNV>", end=p + 20),
            Variant.from_alleles(CHR5, p, seq[p], "<INS>"),
            Variant.from_alleles(CHR5, p, seq[p], "<DEL>", end=p + 1),  # no END beyond POS, no SVLEN
            Variant.from_alleles(CHR5, p, seq[p], "<DEL>", end=p + 1, svlen="long"),  # SVLEN not a number
            Variant.from_alleles(CHR5, p, seq[p], "<DUP:INT>", end=p + 20),
            Variant.from_alleles(CHR5, p, seq[p], f"{seq[p]}]{CHR5}:5000]"),  # a breakend
        ],
        "spanning_deletion": [SNV(CHR5, p, seq[p], "*")],
        "alt_not_acgt": [SNV(CHR5, p, seq[p], seq[p] + "AN"),
                         Variant.from_alleles(CHR5, p, seq[p], "<INS>", inserted="ACRT")],
        "ref_mismatch": [SNV(CHR5, p, "AAAA" if seq[p : p + 4].upper() != "AAAA" else "CCCC", "A")],
        "pos_out_of_range": [Variant.from_alleles(CHR5, p, seq[p], "<DEL>", end=2_000_000)],
    }
    variants = [v for vs in cases.values() for v in vs]
    scores = score_variants(model, tokenizer, chr5, variants, window_tokens=WINDOW)
    assert [s.skip for s in scores] == [reason for reason, vs in cases.items() for _ in vs]
    assert all(s.llr is None for s in scores)
    # A deletion over an N run: its REF holds N.
    gapped = chr5_seq[:2000] + "N" * 10 + chr5_seq[2000:4000]
    genome = Genome(write_fasta(tmp_path / "gapped.fa", {"g": gapped}))
    assert check_variant(genome, SNV("g", 1995, gapped[1995:2015], gapped[1995])) == "ref_not_acgt"
    symbolic = Variant.from_alleles("g", 1995, gapped[1995], "<DEL>", end=2015)
    assert check_variant(genome, symbolic) is None and resolve(genome, symbolic) == "ref_not_acgt"


# ----------------------------------------------------------------------------------------------------------
# background percentiles and the VCF written back
# ----------------------------------------------------------------------------------------------------------
def test_background_snvs_are_reproducible_and_uniform_over_acgt(tmp_path, shared_data):
    """Seeded, independent of how many are asked for, only A/C/G/T reference bases (soft-masked too) with
    another base; two records with equal A/C/G/T counts (one mostly N) draw alike."""
    chr5 = Genome(shared_data / "athaliana_chr5_tail.fa.gz")
    first = background_snvs(chr5, 300, seed=7)
    assert first == background_snvs(chr5, 300, seed=7) and first[:100] == background_snvs(chr5, 100, seed=7)
    assert first != background_snvs(chr5, 300, seed=8)
    for snv in first:
        assert chr5.fetch(CHR5, snv.pos, snv.pos + 1).upper() == snv.ref and snv.alt in "ACGT" and snv.alt != snv.ref
    seq = chr5.fetch(CHR5, 0, 4000).upper()
    genome = Genome(write_fasta(tmp_path / "two.fa", {"a": seq[:1000], "b": seq[1000:2000] + "N" * 2000}))
    snvs = background_snvs(genome, 4000, seed=1)
    in_a = sum(s.chrom == "a" for s in snvs)
    assert abs(in_a - 2000) < 4 * np.sqrt(4000 * 0.25)  # binomial(4000, 1/2): within 4 standard deviations
    assert all(s.chrom == "a" or s.pos < 1000 for s in snvs)
    assert {s.alt for s in snvs if s.ref == "A"} == {"C", "G", "T"}


def vcf_line(chrom, pos1, ref, alt, info=".") -> str:
    return f"{chrom}\t{pos1}\t.\t{ref}\t{alt}\t.\tPASS\t{info}\n"


def test_vep_writes_indel_sv_scores_and_background_percentiles(tiny_mlm_dir, mlm, chr5, chr5_seq, shared_data,
                                                                tmp_path):
    """`genolm vep --background` on a VCF of explicit and symbolic variants: the VCF parses with pysam, symbolic
    alleles score as their explicit forms, skips name their reason, and GENOLM_LLR_PCT (TSV llr_pct) equals
    scipy's percentile of each score among the background SNVs scored again here."""
    model, tokenizer = mlm
    seq = chr5_seq
    p = 333_000  # 0-based padding base; VCF POS = p + 1
    n = 15
    header = [
        "##fileformat=VCFv4.2\n",
        f"##contig=<ID={CHR5},length={len(seq)}>\n",
        '##INFO=<ID=END,Number=1,Type=Integer,Description="End">\n',
        '##INFO=<ID=SVLEN,Number=.,Type=Integer,Description="SV length">\n',
        '##INFO=<ID=SVTYPE,Number=1,Type=String,Description="SV type">\n',
        '##INFO=<ID=SVINSSEQ,Number=.,Type=String,Description="Inserted sequence">\n',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n",
    ]
    ref, segment = seq[p], seq[p + 1 : p + 1 + n]
    records = [
        vcf_line(CHR5, p + 1, ref, "<DEL>", f"SVTYPE=DEL;END={p + 1 + n}"),
        vcf_line(CHR5, p + 1, seq[p : p + 1 + n], ref),
        vcf_line(CHR5, p + 1, ref, "<DUP>", f"SVTYPE=DUP;SVLEN={n}"),
        vcf_line(CHR5, p + 1, ref, ref + segment),
        vcf_line(CHR5, p + 1, ref, "<INV>", f"SVTYPE=INV;END={p + 1 + n}"),
        vcf_line(CHR5, p + 1, seq[p : p + 1 + n], ref + reverse_complement(segment)),
        vcf_line(CHR5, p + 1, ref, "<INS>", "SVTYPE=INS;SVINSSEQ=TTGACCA"),
        vcf_line(CHR5, p + 1, ref, ref + "TTGACCA"),
        vcf_line(CHR5, 500_001, seq[500_000], "A" if seq[500_000].upper() != "A" else "C"),  # an SNV
        vcf_line(CHR5, p + 1, ref, "<INS>", "SVTYPE=INS"),  # no sequence
        vcf_line(CHR5, p + 1, ref, "<CNV>", f"SVTYPE=CNV;END={p + 500}"),
        vcf_line(CHR5, p + 1, ref, "<DEL>", f"SVTYPE=DEL;END={p + 5000}"),  # too long
        vcf_line(CHR5, p + 1, ref, f"{ref}[{CHR5}:7000[", "SVTYPE=BND"),
    ]
    vcf = tmp_path / "svs.vcf"
    vcf.write_text("".join(header + records))
    argv = ["vep", "--model", str(tiny_mlm_dir), "--fasta", str(shared_data / "athaliana_chr5_tail.fa.gz"),
            "--vcf", str(vcf), "--window-tokens", str(WINDOW), "--device", "cpu", "--quiet",
            "--background", "40", "--background-seed", "3", "--embedding-distance"]
    assert main([*argv, "--out", str(tmp_path / "scored.vcf.gz")]) == 0
    assert main([*argv, "--out", str(tmp_path / "scored.tsv")]) == 0
    with pysam.VariantFile(str(tmp_path / "scored.vcf.gz")) as scored:
        info = scored.header.info
        assert info["GENOLM_LLR_PCT"].number == "A" and info["GENOLM_LLR_PCT"].type == "Float"
        assert "40 random SNVs" in info["GENOLM_LLR_PCT"].description
        output = list(scored)
    assert len(output) == len(records)
    llr = [r.info.get("GENOLM_LLR", (None,))[0] for r in output]
    for i in (0, 2, 4, 6):  # symbolic == explicit
        assert llr[i] is not None and llr[i] == pytest.approx(llr[i + 1], rel=1e-6)
        assert output[i].info["GENOLM_EMB_DIST"][0] == pytest.approx(output[i + 1].info["GENOLM_EMB_DIST"][0], rel=1e-5)
    skips = [r.info.get("GENOLM_SKIP") for r in output]
    assert skips == [None] * 9 + ["unresolved_symbolic", "unresolved_symbolic", "too_long", "unresolved_symbolic"]
    assert all("GENOLM_LLR_PCT" in r.info for r in output[:9]) and not any("GENOLM_LLR_PCT" in r.info for r in output[9:])

    background = background_scores(model, tokenizer, chr5, 40, seed=3, window_tokens=WINDOW)
    assert len(background) == 40 and np.all(np.diff(background) >= 0)
    rows = (tmp_path / "scored.tsv").read_text().splitlines()
    columns = rows[0].split("\t")
    table = [dict(zip(columns, row.split("\t"))) for row in rows[1:]]
    assert [row["skip"] for row in table] == [s or "" for s in skips]
    for row, record in zip(table[:9], output):
        expected = percentileofscore(background, float(row["llr"]), kind="weak")
        assert float(row["llr_pct"]) == pytest.approx(expected, abs=1e-9)
        assert record.info["GENOLM_LLR_PCT"][0] == pytest.approx(expected, abs=1e-4)
    assert all(row["llr_pct"] == "" for row in table[9:])
