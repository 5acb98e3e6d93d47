"""Zero-shot variant effect prediction (``genolm vep``): masked-marginal log-likelihood ratios of SNVs,
pseudo-log-likelihood ratios of indels, MNVs and structural variants.

**SNV score.** For an SNV at base ``p`` of one strand, the window is the run of ``window_tokens`` grid tokens
centred on the token holding ``p`` (the token is the window's middle token, index ``window_tokens // 2``; the
window is shifted inwards at a sequence end, so a variant near an end keeps a full-size window, off-centre,
instead of being skipped). The variant's token is masked and

    GENOLM_LLR = log P(alt token | masked window) - log P(ref token | masked window)

where the alt token is the ref token with the base at ``p`` substituted (see
:mod:`genolm.inference.scoring` for single-nucleotide tokens). The grid is the tokenisation of the whole
strand from its first base, so the phase of the k-mers never depends on the window size (see
:mod:`genolm.inference.genome`). Negative scores mean the model finds the alternative allele less likely.
With ``rc=True`` the score is the mean of the forward-strand score and the score on the reverse-complement
strand (its own grid, tokenised from the other end, with complemented alleles).

**Indel, MNV and SV score** (:mod:`genolm.inference.variants`). REF/ALT indels and MNVs, and the symbolic
``<DEL>``, ``<INS>`` (with INFO ``SVINSSEQ``), ``<DUP>`` (tandem) and ``<INV>`` (INFO ``END`` or ``SVLEN``), are
reduced to one normalised edit (trimmed, left-aligned): reference bases ``[start, end)`` replaced by ``alt``.
An edit that turns out to change one base is scored as that SNV. Otherwise the REF and ALT haplotype windows
are built around it: the same left flank (whole k-mers ending exactly at the edit), the changed bases
tokenised alone (k-mers, then single bases), and the same right flank (k-mers from the end of the edit); the
flanks take ``(W - M) // 2`` and ``W - M - left`` tokens, ``M`` the longer middle, so the longer window has
``W`` tokens. Then

    GENOLM_LLR = PLL(ALT window) - PLL(REF window)

where PLL sums ``log P(token | window with that token masked)`` over the middle's tokens and one flank token
on each side (one masked forward pass per token, batched). The windows depend only on the two haplotypes, so a
deletion scores exactly minus the matching insertion on the genome carrying the deletion. A change of more than
``(W // 2) * k`` bases (half a window) is ``too_long``. With ``rc=True`` the same construction on the reverse-complement strand is
averaged in.

**Embedding distance** (optional): the L2 distance between the mean final-layer embeddings (``<cls>`` left
out) of the unmasked reference window and the same window carrying the alternative allele (for an indel, of
the unmasked REF and ALT haplotype windows).

**Background percentile** (optional, ``run_vep(background=N)``): ``N`` random SNVs of the genome (seeded;
positions uniform over its A/C/G/T bases, a uniform other base) are scored once with the same settings, and
each allele's ``GENOLM_LLR_PCT`` is the percentage of their scores that are <= its own. The background holds
SNV scores only: an indel's percentile compares its PLL ratio with SNV masked-marginal ratios.

**Batching.** Every SNV inside the same token on the same strand shares one masked window, so windows are
deduplicated before they are batched: ``n`` SNVs need at most ``n`` masked forward passes per strand, and a
dense set of variants far fewer.

**Records that are not scored** keep their place in the output and carry ``GENOLM_SKIP``; see
:data:`SKIP_REASONS`.

Coordinates: VCF ``POS`` is 1-based; genolm's Python API (:class:`SNV`, :class:`Variant`) is 0-based,
``pos = POS - 1``.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from array import array
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import defaults
from ..errors import ConfigError, InputDataError
from ..genome import complement
from ..outputs import check_outputs
from .distributed import (
    Workers,
    chunk_bounds,
    concatenate,
    file_fingerprint,
    model_fingerprint,
    run_in_chunks,
    start_workers,
)
from .genome import Genome, Window
from .scoring import (
    EncodedBatch,
    KmerTable,
    encode_windows,
    load_model,
    masked_log_probs,
    masked_token_log_probs,
    max_window_tokens,
    mean_embeddings,
    window_embeddings,
)
from .variants import Edit, Variant, haplotype_windows, resolve
from .variants import check as check_alleles

__all__ = [
    "SKIP_REASONS",
    "SNV",
    "Variant",
    "VariantScore",
    "VepReport",
    "add_percentiles",
    "as_variant",
    "background_scores",
    "background_snvs",
    "check_contigs",
    "check_variant",
    "naive_variant_score",
    "run_vep",
    "score_variants",
    "validate_vcf",
    "variant_from_record",
]

SKIP_REASONS = {
    "unknown_contig": "CHROM is not a sequence of the FASTA",
    "pos_out_of_range": "POS, the end of REF or INFO END is outside the sequence",
    "ref_mismatch": "REF differs from the FASTA at POS (case ignored)",
    "no_alt": "ALT is '.': nothing to score",
    "spanning_deletion": "ALT is '*' (the allele is missing because of an overlapping deletion): nothing to score",
    "unresolved_symbolic": "a symbolic ALT whose alleles cannot be built from the reference (<CNV>, <INS> without "
    "SVINSSEQ, a breakend, <DEL>/<DUP>/<INV> without END or SVLEN)",
    "too_long": "the variant changes more than half a window of bases ((window_tokens // 2) * k) on either "
    "haplotype",
    "ref_not_acgt": "a reference base the variant changes is N or another non-A/C/G/T character",
    "alt_not_acgt": "ALT (or SVINSSEQ) holds N or an IUPAC ambiguity code",
}
INFO_LLR = "GENOLM_LLR"
INFO_EMB = "GENOLM_EMB_DIST"
INFO_SKIP = "GENOLM_SKIP"
INFO_PCT = "GENOLM_LLR_PCT"
TSV_COLUMNS = ["chrom", "pos", "id", "ref", "alt", "llr", "emb_dist", "llr_pct", "skip"]


@dataclass(frozen=True)
class SNV:
    """A variant to score: ``pos`` is 0-based on the forward strand (VCF ``POS - 1``); alleles as in a VCF."""

    chrom: str
    pos: int
    ref: str
    alt: str


@dataclass
class VariantScore:
    """Result for one variant: ``llr`` (and ``emb_dist`` when asked for), or the ``skip`` reason."""

    llr: float | None = None
    emb_dist: float | None = None
    skip: str | None = None
    llr_pct: float | None = None  # percentile among background SNV scores (run_vep background=N)


@dataclass
class VepReport:
    """Counts and speed of a ``run_vep`` call."""

    records: int = 0
    alleles: int = 0
    scored: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def variants_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"
        return (
            f"{self.records} records, {self.scored}/{self.alleles} ALT alleles scored (skipped: {skipped}) "
            f"in {self.seconds:.1f} s: {self.variants_per_second:.1f} variants/s"
        )


def as_variant(variant: SNV | Variant) -> Variant:
    """A :class:`~genolm.inference.variants.Variant` for an :class:`SNV` (any REF/ALT strings) or a Variant."""
    if isinstance(variant, Variant):
        return variant
    return Variant.from_alleles(variant.chrom, variant.pos, variant.ref, variant.alt)


def check_variant(genome: Genome, variant: SNV | Variant) -> str | None:
    """The reason ``variant`` cannot be scored whatever the window (a key of :data:`SKIP_REASONS`), or
    ``None``; ``too_long`` depends on the window and is decided by :func:`score_variants`."""
    return check_alleles(genome, as_variant(variant))


class _MaskedWindow(NamedTuple):
    """One masked forward pass: a window of one strand and the token masked in it (bases on the strand's own
    coordinates, 0-based half-open)."""

    chrom: str
    strand: str
    window: Window
    token: int
    token_start: int
    token_end: int

    @property
    def index(self) -> int:
        """Position of the masked token in the window (``<cls>`` not counted)."""
        return self.token - self.window.first_token


def _strand_view(genome: Genome, variant: SNV, strand: str) -> tuple[int, str, str]:
    """Position and upper-case alleles of ``variant`` in the coordinates of ``strand``."""
    ref, alt = variant.ref.upper(), variant.alt.upper()
    if strand == "+":
        return variant.pos, ref, alt
    return genome.lengths[variant.chrom] - 1 - variant.pos, complement(ref), complement(alt)


def score_variants(
    model,
    tokenizer,
    genome: Genome,
    variants: Sequence[SNV | Variant],
    *,
    window_tokens: int | None = None,
    rc: bool = False,
    embedding_distance: bool = False,
    batch_size: int = 32,
    progress: bool = False,
) -> list[VariantScore]:
    """Score variants (see the module docstring): an SNV by the masked-marginal log-likelihood ratio, an indel,
    MNV or symbolic SV by the pseudo-log-likelihood ratio of its haplotype windows.

    Args:
        model: a loaded masked LM (see :func:`genolm.inference.scoring.load_model`).
        tokenizer: its ``GenoLMTokenizer``.
        genome: the reference.
        variants: :class:`SNV` (any REF/ALT strings) or :class:`~genolm.inference.variants.Variant` (symbolic
            ALTs) with 0-based positions; one that cannot be scored is returned with a ``skip`` reason.
        window_tokens: tokens per window, ``<cls>`` excluded (default: the model's maximum).
        rc: average with the reverse-complement strand.
        embedding_distance: also compute ``emb_dist`` (one more unmasked forward per window and per allele).
        batch_size: windows per forward pass.
        progress: show a progress bar.

    Returns:
        One :class:`VariantScore` per input variant, in order.
    """
    table = KmerTable(tokenizer)
    window_tokens = _check_window(model, window_tokens)
    strands = ("+", "-") if rc else ("+",)
    results = []
    snvs: list[tuple[int, SNV]] = []
    edits: list[tuple[int, str, Edit]] = []
    max_bases = (window_tokens // 2) * table.k  # half a window: longer changes are too_long
    for i, given in enumerate(variants):
        variant = as_variant(given)
        reason = check_alleles(genome, variant)
        if reason is None and variant.kind == "snv":
            snvs.append((i, SNV(variant.chrom, variant.pos, variant.ref, variant.alt)))
        elif reason is None:
            edit = resolve(genome, variant, max_bases)
            if isinstance(edit, str):
                reason = edit
            elif edit.is_substitution:  # e.g. an MNV that differs at one base: the SNV's exact score
                ref = genome.fetch(variant.chrom, edit.start, edit.end)
                snvs.append((i, SNV(variant.chrom, edit.start, ref, edit.alt)))
            else:
                edits.append((i, variant.chrom, edit))
        results.append(VariantScore(skip=reason))

    llr = np.full((len(variants), len(strands)), np.nan)
    emb = np.full((len(variants), len(strands)), np.nan)
    if snvs:
        _score_snvs(
            model, tokenizer, table, genome, snvs, strands, window_tokens, embedding_distance, batch_size,
            progress, llr, emb,
        )
    if edits:
        too_long = _score_edits(
            model, tokenizer, table, genome, edits, strands, window_tokens, embedding_distance, batch_size,
            llr, emb,
        )
        for i in too_long:
            results[i].skip = "too_long"

    for i, result in enumerate(results):
        if result.skip is None:
            result.llr = float(llr[i].mean())
            if embedding_distance:
                result.emb_dist = float(emb[i].mean())
    return results


def _score_snvs(
    model, tokenizer, table: KmerTable, genome: Genome, snvs: list[tuple[int, SNV]], strands: tuple[str, ...],
    window_tokens: int, embedding_distance: bool, batch_size: int, progress: bool, llr: np.ndarray,
    emb: np.ndarray,
) -> None:
    """Fill ``llr[i, strand]`` (and ``emb``) with the masked-marginal scores of the SNVs ``(i, snv)``."""
    device = next(model.parameters()).device
    # Deduplicate: every SNV in the same token of the same strand shares one masked window.
    groups: dict[_MaskedWindow, list[tuple[int, int, int, str, str]]] = defaultdict(list)
    for i, variant in snvs:
        for s, strand in enumerate(strands):
            grid = genome.grid(variant.chrom, table.k, strand)
            pos, ref, alt = _strand_view(genome, variant, strand)
            token = grid.token_of(pos)
            token_start, token_end = grid.token_span(token)
            masked = _MaskedWindow(
                variant.chrom, strand, grid.window(token, window_tokens), token, token_start, token_end
            )
            groups[masked].append((i, s, pos - token_start, ref, alt))

    keys = sorted(groups)
    bar = tqdm(total=len(keys), desc="masked windows", unit="win", disable=not progress, leave=False)
    for begin in range(0, len(keys), batch_size):
        batch_keys = keys[begin : begin + batch_size]
        sequences = [
            genome.fetch_strand(m.chrom, m.window.start, m.window.end, m.strand).upper() for m in batch_keys
        ]
        ids = [tokenizer.encode_genome(seq) for seq in sequences]
        for m, window_ids in zip(batch_keys, ids):
            if len(window_ids) != m.window.n_tokens:  # grid and tokenizer disagree: a bug, not an input error
                raise RuntimeError(f"{m}: {len(window_ids)} tokens, the grid says {m.window.n_tokens}")
        encoded = encode_windows(ids, table, device)
        positions = torch.tensor([m.index + 1 for m in batch_keys])  # + 1 for <cls>
        log_probs = masked_log_probs(model, encoded, positions, table.mask_id).cpu().numpy()
        alt_rows = []  # (batch row, masked position, alt id, variant, strand) for the embedding distance
        for row, m in enumerate(batch_keys):
            token_seq = sequences[row][m.token_start - m.window.start : m.token_end - m.window.start]
            for i, s, offset, ref, alt in groups[m]:
                ref_id, alt_id = table.substitution_ids(token_seq, offset, alt)
                if token_seq[offset] != ref or ref_id != ids[row][m.index]:
                    raise RuntimeError(f"variant {i}: the window's token {token_seq} does not hold REF {ref}")
                llr[i, s] = log_probs[row, alt_id] - log_probs[row, ref_id]
                alt_rows.append((row, m.index + 1, alt_id, i, s))
        if embedding_distance:
            _embedding_distances(model, encoded, alt_rows, emb, batch_size)
        bar.update(len(batch_keys))
    bar.close()


def _score_edits(
    model, tokenizer, table: KmerTable, genome: Genome, edits: list[tuple[int, str, Edit]],
    strands: tuple[str, ...], window_tokens: int, embedding_distance: bool, batch_size: int, llr: np.ndarray,
    emb: np.ndarray,
) -> list[int]:
    """Fill ``llr[i, strand]`` (and ``emb``) with ``PLL(ALT window) - PLL(REF window)`` of the edits
    ``(i, chrom, edit)`` (see :mod:`genolm.inference.variants`); return the ``i`` that are ``too_long``."""
    device = next(model.parameters()).device
    windows, positions, owners = [], [], []  # one masked forward pass each; owner (i, strand, sign)
    pairs, pair_owners = [], []  # unmasked REF and ALT windows for the embedding distance
    too_long = []
    for i, chrom, edit in edits:
        per_strand = [haplotype_windows(genome, chrom, edit, strand, tokenizer, window_tokens) for strand in strands]
        if any(h is None for h in per_strand):
            too_long.append(i)
            continue
        for s, haplotypes in enumerate(per_strand):
            for allele, sign in (("ref", -1.0), ("alt", 1.0)):
                ids = haplotypes.ids(allele)
                for position in haplotypes.scored_tokens(allele):
                    windows.append(ids)
                    positions.append(position)
                    owners.append((i, s, sign))
            pairs += [haplotypes.ids("ref"), haplotypes.ids("alt")]
            pair_owners.append((i, s))
    log_probs = masked_token_log_probs(model, windows, positions, table, batch_size, device)
    scored = {(i, s) for i, s, _ in owners}
    for i, s in scored:
        llr[i, s] = 0.0
    for (i, s, sign), value in zip(owners, log_probs):
        llr[i, s] += sign * value
    if embedding_distance and pairs:
        embeddings = window_embeddings(model, pairs, table, batch_size, device)
        distances = np.linalg.norm(embeddings[1::2] - embeddings[0::2], axis=-1)
        for (i, s), distance in zip(pair_owners, distances):
            emb[i, s] = distance
    return too_long


def _embedding_distances(
    model,
    encoded: EncodedBatch,
    alt_rows: list[tuple[int, int, int, int, int]],
    out: np.ndarray,
    batch_size: int,
) -> None:
    """Fill ``out[variant, strand]`` with the L2 distance between the mean embeddings of each reference window
    (a row of ``encoded``) and of the window with the alternative token."""
    ref_emb = mean_embeddings(model, encoded)  # one batch: the unmasked reference windows
    for b in range(0, len(alt_rows), batch_size):
        chunk = alt_rows[b : b + batch_size]
        batch = _rows(encoded, [row for row, *_ in chunk])
        for j, (_row, position, alt_id, _i, _s) in enumerate(chunk):
            batch.input_ids[j, position] = alt_id
        alt_emb = mean_embeddings(model, batch)
        dist = torch.linalg.vector_norm(alt_emb - ref_emb[[row for row, *_ in chunk]], dim=-1).cpu().numpy()
        for j, (_row, _position, _alt_id, i, s) in enumerate(chunk):
            out[i, s] = dist[j]


def _rows(encoded: EncodedBatch, rows: list[int]) -> EncodedBatch:
    index = torch.tensor(rows, device=encoded.input_ids.device)
    return EncodedBatch(encoded.input_ids[index].clone(), encoded.attention_mask[index])


def _check_window(model, window_tokens: int | None) -> int:
    limit = max_window_tokens(model)
    if window_tokens is None:
        return limit
    if not 1 <= window_tokens <= limit:
        raise ConfigError(
            f"window_tokens={window_tokens}: the model takes 1 to {limit} tokens (<cls> excluded)"
        )
    return int(window_tokens)


@torch.inference_mode()
def naive_variant_score(
    model,
    tokenizer,
    genome: Genome,
    variant: SNV,
    *,
    window_tokens: int | None = None,
    rc: bool = False,
) -> float:
    """Reference implementation for one SNV, one forward pass per strand: mutate the window, re-tokenise both
    alleles with the tokenizer's ``__call__``, mask the token holding the variant, run the full model and read
    the log-probabilities. Same windows as :func:`score_variants`; used by tests and benchmarks."""
    reason = check_variant(genome, variant)
    if reason is not None:
        raise ValueError(f"{variant}: {SKIP_REASONS[reason]}")
    if len(variant.ref) != 1 or len(variant.alt) != 1:
        raise ValueError(f"{variant}: not an SNV (indels are scored by their haplotype windows)")
    window_tokens = _check_window(model, window_tokens)
    device = next(model.parameters()).device
    scores = []
    for strand in ("+", "-") if rc else ("+",):
        grid = genome.grid(variant.chrom, tokenizer.k, strand)
        pos, ref, alt = _strand_view(genome, variant, strand)
        window = grid.window(grid.token_of(pos), window_tokens)
        seq = genome.fetch_strand(variant.chrom, window.start, window.end, strand).upper()
        offset = pos - window.start
        mutated = seq[:offset] + alt + seq[offset + 1 :]
        ref_ids = tokenizer(seq)["input_ids"]
        alt_ids = tokenizer(mutated)["input_ids"]
        # Walk the token strings to the one covering the variant (<cls> at 0 covers no base).
        tokens = tokenizer.convert_ids_to_tokens(ref_ids)
        covered, index = 0, 0
        while covered <= offset:
            index += 1
            covered += 1 if tokens[index].startswith("<") else len(tokens[index])
        masked = list(alt_ids)
        masked[index] = tokenizer.mask_token_id
        logits = model(input_ids=torch.tensor([masked], device=device)).logits[0, index]
        log_probs = F.log_softmax(logits.float(), dim=-1)
        scores.append(float(log_probs[alt_ids[index]] - log_probs[ref_ids[index]]))
    return float(np.mean(scores))


# ----------------------------------------------------------------------------------------------------------
# Background distribution: percentiles among random SNVs of the genome
# ----------------------------------------------------------------------------------------------------------
_BACKGROUND_DRAWS = 1024  # positions drawn at a time (fixed: the first n SNVs of a seed never depend on n)


def background_snvs(genome: Genome, n: int, seed: int = 0) -> list[SNV]:
    """``n`` random SNVs of ``genome``, reproducible for a ``seed``: positions uniform over the A/C/G/T bases of
    all its records (any case; uniform positions over the records' bases, the others redrawn), each with one
    of the three other bases, uniformly.

    Raises:
        InputDataError: the genome has (almost) no A/C/G/T base.
    """
    if n < 0:
        raise ConfigError(f"background={n}: the number of background SNVs must be 0 or more")
    rng = np.random.default_rng(seed)
    names = list(genome.lengths)
    ends = np.cumsum([genome.lengths[name] for name in names])
    total = int(ends[-1]) if len(ends) else 0
    snvs: list[SNV] = []
    drawn = 0
    while len(snvs) < n:
        if total == 0 or drawn > 100 * n + 100 * _BACKGROUND_DRAWS:
            raise InputDataError(f"{genome.path}: found {len(snvs)} A/C/G/T bases in {drawn} random positions")
        positions = rng.integers(0, total, size=_BACKGROUND_DRAWS)
        shifts = rng.integers(1, 4, size=_BACKGROUND_DRAWS)
        drawn += _BACKGROUND_DRAWS
        records = np.searchsorted(ends, positions, side="right")
        for where, record, shift in zip(positions, records, shifts):
            pos = int(where - (ends[record - 1] if record else 0))
            base = genome.fetch(names[record], pos, pos + 1).upper()
            if base in ("A", "C", "G", "T"):
                snvs.append(SNV(names[record], pos, base, "ACGT"[("ACGT".index(base) + int(shift)) % 4]))
                if len(snvs) == n:
                    break
    return snvs


def background_scores(
    model, tokenizer, genome: Genome, n: int, *, seed: int = 0, **score_options
) -> np.ndarray:
    """GENOLM_LLR of :func:`background_snvs` (``n``, ``seed``) scored by :func:`score_variants` with
    ``score_options`` (``window_tokens``, ``rc``, ``batch_size``...): float64 array, sorted."""
    scores = score_variants(model, tokenizer, genome, background_snvs(genome, n, seed), **score_options)
    return np.sort(np.array([score.llr for score in scores], dtype=np.float64))


def add_percentiles(scores: Iterable[VariantScore], background: np.ndarray) -> None:
    """Set each scored variant's ``llr_pct``: the percentage of ``background`` scores (sorted) that are <= its
    ``llr`` (``scipy.stats.percentileofscore(..., kind="weak")``)."""
    for score in scores:
        if score.llr is not None and len(background):
            score.llr_pct = 100.0 * int(np.searchsorted(background, score.llr, side="right")) / len(background)


def variant_from_record(record, index: int) -> Variant:
    """The :class:`~genolm.inference.variants.Variant` of ALT allele ``index`` of a pysam record: for a
    symbolic ALT, END from INFO END (htslib's ``record.stop``), SVLEN and SVINSSEQ (per allele when there are
    several values)."""
    alt = record.alts[index]
    if not alt.startswith("<"):
        return Variant.from_alleles(record.chrom, record.pos - 1, record.ref, alt)
    return Variant.from_alleles(
        record.chrom,
        record.pos - 1,
        record.ref,
        alt,
        end=record.stop,
        svlen=_info_value(record, "SVLEN", index),
        inserted=_info_value(record, "SVINSSEQ", index),
    )


def _info_value(record, key: str, index: int):
    """INFO ``key`` of ALT allele ``index`` (the only value when there is one), or ``None``."""
    try:
        value = record.info.get(key)
    except (KeyError, ValueError):  # not declared in the header
        return None
    if isinstance(value, tuple):
        if not value:
            return None
        value = value[index] if index < len(value) else value[0]
    return value


# ----------------------------------------------------------------------------------------------------------
# VCF files
# ----------------------------------------------------------------------------------------------------------
_REF_CHARS = set("ACGTNRYSWKMBDHVacgtnryswkmbdhv")


@dataclass
class VcfScan:
    """What :func:`validate_vcf` learned: contigs in order of first use, each record's line number, and the
    INFO keys (``True`` when one carries a value), FILTER ids and symbolic ALTs the records use without a
    header line declaring them."""

    contigs: list[str]
    line_numbers: array
    info_keys: dict[str, bool] = field(default_factory=dict)
    filters: set[str] = field(default_factory=set)
    symbolic: bool = False


_HEADER_FIELDS = ["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]
_META_TYPE = re.compile(r"^##(INFO|FORMAT)=<ID=([^,>]+),.*?Type=(\w+)")
_GT = re.compile(r"^(\.|\d+)([/|](\.|\d+))*$")


def _open_vcf_text(path: Path):
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rt") if magic == b"\x1f\x8b" else open(path)


def _is_plain_gzip(path: Path) -> bool:
    """Whether ``path`` is gzip but not bgzip (BGZF blocks carry a ``BC`` extra field), which htslib cannot
    read as a VCF."""
    with open(path, "rb") as handle:
        head = handle.read(18)
    return head[:2] == b"\x1f\x8b" and not (len(head) == 18 and head[3] & 4 and head[12:14] == b"BC")


def _bad_number(value: str, kind: str) -> bool:
    """Whether a comma-separated INFO/FORMAT value is not of the declared ``Integer``/``Float`` type."""
    for item in value.split(","):
        if item == ".":
            continue
        try:
            int(item) if kind == "Integer" else float(item)
        except ValueError:
            return True
    return False


def _record_problem(fields: list[str], columns: int, types: dict[tuple[str, str], str]) -> str | None:
    """The first problem of one data line split at tabs, or ``None``."""
    if len(fields) != columns:
        return f"expected {columns} tab-separated columns, found {len(fields)}"
    chrom, pos, _id, ref, alt, qual, filters, info = fields[:8]
    if not chrom:
        return "empty CHROM"
    if not pos.isdigit():
        return f"POS {pos!r} is not a non-negative integer"
    if not ref or not set(ref) <= _REF_CHARS:
        return f"REF {ref!r} is not a string of bases"
    if not alt or any(not allele or any(c.isspace() for c in allele) for allele in alt.split(",")):
        return f"ALT {alt!r} is not '.' or a comma-separated list of alleles"
    if qual != "." and _bad_number(qual, "Float"):
        return f"QUAL {qual!r} is not a number or '.'"
    if not filters:
        return "empty FILTER"
    if info != ".":
        for entry in info.split(";"):
            key, _, value = entry.partition("=")
            kind = types.get(("INFO", key))
            if not key:
                return f"empty INFO entry in {info!r}"
            if kind == "Flag" and value:
                return f"INFO flag {key} has a value"
            if kind in ("Integer", "Float") and _bad_number(value, kind):
                return f"INFO {key}={value!r} is not of Type={kind}"
    if columns > 8:
        keys = fields[8].split(":")
        for sample in fields[9:]:
            values = sample.split(":")
            if len(values) > len(keys):
                return f"sample field {sample!r} has more values than FORMAT {fields[8]!r}"
            for key, value in zip(keys, values):
                kind = types.get(("FORMAT", key))
                if key == "GT" and not _GT.match(value):
                    return f"GT {value!r} is not a genotype"
                if kind in ("Integer", "Float") and _bad_number(value, kind):
                    return f"FORMAT {key}={value!r} is not of Type={kind}"
    return None


def validate_vcf(path: str | os.PathLike) -> VcfScan:
    """Check a VCF line by line before pysam reads it: pysam reports no line numbers, and htslib silently turns
    some malformed values into missing ones.

    Checks the ``##fileformat`` line, the ``#CHROM`` header and, for each record, the column count, ``POS``
    (a non-negative integer), ``REF`` (bases), ``ALT`` (``.`` or comma-separated alleles), ``QUAL``, and the
    INFO and FORMAT values declared ``Integer``, ``Float`` or ``Flag`` in the header, and ``GT``.

    Raises:
        InputDataError: naming the file, the 1-based line number and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"{path}: VCF file not found")
    contigs: dict[str, None] = {}
    types: dict[tuple[str, str], str] = {}
    declared_filters = {"PASS"}
    info_keys: dict[str, bool] = {}
    filters: set[str] = set()
    symbolic = False
    lines = array("q")
    columns = None
    with _open_vcf_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            problem = None
            if lineno == 1 and not line.startswith("##fileformat=VCF"):
                problem = "the first line must be ##fileformat=VCFv4.x"
            elif line.startswith("##"):
                meta = _META_TYPE.match(line)
                if meta:
                    types[(meta.group(1), meta.group(2))] = meta.group(3)
                elif line.startswith("##FILTER=<ID="):
                    declared_filters.add(line[len("##FILTER=<ID=") :].split(",")[0].rstrip(">"))
            elif line.startswith("#"):
                if line[1:].split("\t")[:8] != _HEADER_FIELDS:
                    problem = (
                        "the header line must start #CHROM POS ID REF ALT QUAL FILTER INFO (tab-separated)"
                    )
                columns = len(line.split("\t"))
            elif not line.strip():
                continue
            elif columns is None:
                problem = "record before the #CHROM header line"
            else:
                fields = line.split("\t")
                problem = _record_problem(fields, columns, types)
                if problem is None:
                    contigs.setdefault(fields[0])
                    lines.append(lineno)
                    symbolic = symbolic or "<" in fields[4] or "[" in fields[4] or "]" in fields[4]
                    filters.update(f for f in fields[6].split(";") if f not in declared_filters and f != ".")
                    if fields[7] != ".":
                        for entry in fields[7].split(";"):
                            key, equals, _ = entry.partition("=")
                            if ("INFO", key) not in types:
                                info_keys[key] = info_keys.get(key, False) or bool(equals)
            if problem is not None:
                shown = line if len(line) <= 80 else line[:77] + "..."
                raise InputDataError(f"{path}:{lineno}: {problem}: {shown!r}")
    if columns is None:
        raise InputDataError(f"{path}: no #CHROM header line (is this a VCF file?)")
    return VcfScan(list(contigs), lines, info_keys, filters, symbolic)


def _names(names: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def check_contigs(vcf_contigs: Sequence[str], fasta_records: Sequence[str], vcf, fasta) -> list[str]:
    """The VCF's record contigs that are not FASTA records (their records are skipped as ``unknown_contig``).

    None of them in the FASTA is a wrong reference: :class:`InputDataError` naming both sets of names. Some
    missing gives a warning on stderr.
    """
    known = set(fasta_records)
    missing = [name for name in vcf_contigs if name not in known]
    if vcf_contigs and len(missing) == len(vcf_contigs):
        raise InputDataError(
            f"{vcf}: no record's contig is a sequence of {fasta} (VCF contigs: {_names(missing)}; FASTA records: "
            f"{_names(list(fasta_records))}); is this the reference the variants were called against?"
        )
    if missing:
        print(
            f"genolm vep: warning: {vcf}: contigs {_names(missing)} are not sequences of {fasta}; their records "
            "are kept unscored (GENOLM_SKIP=unknown_contig)",
            file=sys.stderr,
        )
    return missing


def _index_vcf(path: Path) -> None:
    """Write ``PATH.tbi`` beside a bgzipped VCF (a warning instead when its records are not sorted)."""
    import pysam

    try:
        pysam.tabix_index(str(path), preset="vcf", force=True)
    except (OSError, ValueError) as err:
        print(f"genolm vep: warning: {path}: not indexed (records not sorted by position?): {err}", file=sys.stderr)


def run_vep(
    model,
    fasta: str | os.PathLike | Genome,
    vcf: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tokenizer=None,
    window_tokens: int | None = None,
    rc: bool = False,
    embedding_distance: bool = False,
    batch_size: int = defaults.VEP_BATCH_SIZE,
    device: str | None = defaults.DEVICE,
    dtype: str | None = defaults.DTYPE,
    compile: bool = defaults.COMPILE,
    chunk_records: int = 10_000,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    workers: Workers | None = None,
    background: int = 0,
    background_seed: int = 0,
) -> VepReport:
    """Score every ALT allele of a VCF (SNVs, indels, MNVs, symbolic SVs) and write every record, in order,
    to a VCF/BCF, TSV or Parquet file.

    Started as several processes (``torchrun`` / ``accelerate launch``), the processes share the chunks of
    ``chunk_records`` records (see :mod:`genolm.inference.distributed`); the output is the same, byte for byte,
    whatever the number of processes.

    Args:
        model: checkpoint folder of a masked LM, or a loaded model.
        fasta: the reference the VCF was called against (``.fa``, ``.fa.gz``), or a :class:`Genome`.
        vcf: input ``.vcf``, ``.vcf.gz`` or ``.bcf``.
        out: ``.vcf``, ``.vcf.gz`` (bgzip, with a tabix index ``.tbi``), ``.bcf``: the input records with INFO
            ``GENOLM_LLR``, ``GENOLM_EMB_DIST`` and ``GENOLM_SKIP`` added (existing values of these fields are
            replaced); ``.tsv`` (``.tsv.gz``): one row per ALT allele, columns ``chrom pos id ref alt llr
            emb_dist llr_pct skip`` with ``pos`` 1-based as in the VCF; ``.parquet``: the same rows and columns, typed
            (``pos`` int64, ``llr`` and ``emb_dist`` float64, empty values null).
        tokenizer, window_tokens, rc, embedding_distance, batch_size: see :func:`score_variants`.
        device, dtype, compile: see :func:`genolm.inference.scoring.load_model` (several processes on GPUs:
            ``cuda:LOCAL_RANK`` each).
        chunk_records: records per chunk: read, scored and written at a time (bounds memory), the unit of work
            shared between processes and of resuming.
        progress: progress bar and a summary line on stderr (main process).
        resume: continue an interrupted run from the parts beside ``out`` (same inputs and options).
        overwrite: discard the parts of an interrupted run instead of refusing them.
        workers: this process's place in a multi-process job (default: from the launcher's environment).
        background, background_seed: score ``background`` random SNVs of the genome (:func:`background_snvs`)
            once and write each scored allele's percentile among them (INFO ``GENOLM_LLR_PCT``, TSV
            ``llr_pct``: the percentage of background scores <= its score); 0: none.

    Returns:
        A :class:`VepReport` (counts over the whole VCF, skip reasons, variants/s).
    """
    started = time.perf_counter()
    vcf, out = Path(vcf), Path(out)
    check_outputs(
        {"--out": out},
        {"--vcf": vcf, "--fasta": None if isinstance(fasta, Genome) else fasta,
         "--model": model if isinstance(model, (str, os.PathLike)) else None},
    )
    output_format = _output_format(out)
    workers = workers or start_workers(device)
    scan = validate_vcf(vcf) if not str(vcf).lower().endswith(".bcf") else None
    genome = fasta if isinstance(fasta, Genome) else Genome(fasta)
    if scan is not None:  # before the model loads: a wrong reference is refused at once
        with contextlib.redirect_stderr(sys.stderr if workers.is_main else io.StringIO()):  # warn once
            check_contigs(scan.contigs, list(genome.lengths), vcf, genome.path)
    fingerprint = {
        "command": "vep",
        "vcf": file_fingerprint(vcf),
        "fasta": file_fingerprint(genome.path),
        "model": model_fingerprint(model),
        "options": {"window_tokens": window_tokens, "rc": rc, "embedding_distance": embedding_distance,
                    "dtype": dtype, "chunk_records": chunk_records, "format": output_format,
                    "background": background, "background_seed": background_seed},
    }
    model, tokenizer = load_model(model, tokenizer, "masked-lm", workers.device or device, dtype, compile)
    window_tokens = _check_window(model, window_tokens)
    background_llrs = None
    if background:  # the reference distribution for GENOLM_LLR_PCT, scored once
        background_llrs = background_scores(
            model, tokenizer, genome, background, seed=background_seed, window_tokens=window_tokens, rc=rc,
            batch_size=batch_size,
        )

    with tempfile.TemporaryDirectory(prefix="genolm-vep-") as scratch:
        readable = vcf
        if scan is not None and _is_plain_gzip(vcf):  # htslib reads bgzip only: hand it the text
            readable = Path(scratch) / "input.vcf"
            with gzip.open(vcf, "rb") as source, open(readable, "wb") as target:
                shutil.copyfileobj(source, target)
        reader = _open_reader(readable, vcf)
        try:
            header = reader.header
            _declare_missing(header, scan, genome)
            _add_genolm_info(header, window_tokens, rc, embedding_distance, vcf, background, background_seed)
            n_records = len(scan.line_numbers) if scan is not None else _count_records(readable, vcf)
            bounds = chunk_bounds(n_records, chunk_records)
            cursor = _RecordCursor(reader, vcf, scan, n_records)
            inner_progress = progress and workers.world == 1 and sys.stderr.isatty()

            def write_chunk(chunk: int, path: Path) -> dict:
                records = cursor.read(*bounds[chunk])
                scores = _score_records(
                    records, model, tokenizer, genome, window_tokens=window_tokens, rc=rc,
                    embedding_distance=embedding_distance, batch_size=batch_size, progress=inner_progress,
                    background_llrs=background_llrs,
                )
                _write_part(output_format, path, records, scores, embedding_distance, out)
                counts = VepReport(records=len(records))
                for record_scores in scores:
                    _tally(counts, record_scores)
                return {"records": counts.records, "alleles": counts.alleles, "scored": counts.scored,
                        "skipped": counts.skipped}

            stats = run_in_chunks(
                out, len(bounds), fingerprint, write_chunk,
                lambda parts, path: _merge_parts(output_format, header, parts, path, Path(scratch)),
                resume=resume, overwrite=overwrite, workers=workers, progress=progress,
            )
        finally:
            reader.close()
    if output_format == "vcf.gz" and workers.is_main:
        _index_vcf(out)
    report = VepReport()
    for counts in stats:
        report.records += counts["records"]
        report.alleles += counts["alleles"]
        report.scored += counts["scored"]
        for reason, n in counts["skipped"].items():
            report.skipped[reason] = report.skipped.get(reason, 0) + n
    report.seconds = time.perf_counter() - started
    if progress and workers.is_main:
        print(f"genolm vep: {report.summary()}", file=sys.stderr)
    return report


def _open_reader(readable: Path, vcf: Path):
    import pysam

    previous_verbosity = pysam.set_verbosity(0)  # htslib warns about undeclared fields; we add them
    try:
        return pysam.VariantFile(str(readable))
    except (OSError, ValueError) as err:
        raise InputDataError(f"{vcf}: pysam cannot read this VCF: {err}") from None
    finally:
        pysam.set_verbosity(previous_verbosity)


def _count_records(readable: Path, vcf: Path) -> int:
    """Records of a BCF (whose text :func:`validate_vcf` cannot read)."""
    reader = _open_reader(readable, vcf)
    try:
        return sum(1 for _ in reader)
    except (OSError, ValueError) as err:
        raise InputDataError(f"{vcf}: pysam cannot parse a record: {err}") from None
    finally:
        reader.close()


class _RecordCursor:
    """Reads the records of one pysam reader by index ranges, in increasing order (skipping the others)."""

    def __init__(self, reader, vcf: Path, scan: VcfScan | None, n_records: int):
        self.records, self.vcf, self.scan, self.n_records = iter(reader), vcf, scan, n_records
        self.index = 0

    def read(self, start: int, end: int) -> list:
        if start < self.index:
            raise RuntimeError(f"records {start}-{end} requested after record {self.index}: chunks go in order")
        while self.index < start:
            _read_chunk(self.records, min(start - self.index, 1000), self.vcf, self.scan, self.index)
            self.index = min(start, self.index + 1000)
        records = _read_chunk(self.records, end - start, self.vcf, self.scan, start)
        self.index = start + len(records)
        if len(records) != end - start:
            raise InputDataError(
                f"{self.vcf}: holds {self.n_records} records but pysam read {self.index}; nothing was written"
            )
        return records


def _score_records(
    records: list, model, tokenizer, genome: Genome, *, window_tokens: int, rc: bool, embedding_distance: bool,
    batch_size: int, progress: bool, background_llrs: np.ndarray | None = None,
) -> list[list[VariantScore]]:
    """The scores of each record's ALT alleles, per record (with their background percentiles when
    ``background_llrs`` is given)."""
    variants, owners = [], []
    for r, record in enumerate(records):
        for a, _alt in enumerate(record.alts or ()):
            variants.append(variant_from_record(record, a))
            owners.append((r, a))
    scores = score_variants(
        model,
        tokenizer,
        genome,
        variants,
        window_tokens=window_tokens,
        rc=rc,
        embedding_distance=embedding_distance,
        batch_size=batch_size,
        progress=progress,  # a nested bar moves the cursor: terminals only
    )
    if background_llrs is not None:
        add_percentiles(scores, background_llrs)
    per_record: list[list[VariantScore]] = [[] for _ in records]
    for (r, _a), score in zip(owners, scores):
        per_record[r].append(score)
    return per_record


# ----------------------------------------------------------------------------------------------------------
# Output parts (one per chunk) and their merge
# ----------------------------------------------------------------------------------------------------------
OUTPUT_FORMATS = {".vcf": "vcf", ".vcf.gz": "vcf.gz", ".vcf.bgz": "vcf.gz", ".bcf": "bcf", ".tsv": "tsv",
                  ".txt": "tsv", ".tsv.gz": "tsv.gz", ".parquet": "parquet"}
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def _output_format(out: Path) -> str:
    """``vcf``, ``vcf.gz``, ``bcf``, ``tsv``, ``tsv.gz`` or ``parquet``, from the output's name."""
    name = out.name.lower()
    for suffix, kind in sorted(OUTPUT_FORMATS.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return kind
    return "vcf"  # any other name: a plain VCF, as before


def _parquet_schema():
    import pyarrow as pa

    return pa.schema([("chrom", pa.string()), ("pos", pa.int64()), ("id", pa.string()), ("ref", pa.string()),
                      ("alt", pa.string()), ("llr", pa.float64()), ("emb_dist", pa.float64()),
                      ("llr_pct", pa.float64()), ("skip", pa.string())])


def _parquet_rows(record, scores: list[VariantScore]) -> list[tuple]:
    """The TSV's rows of one record with typed values (``None`` for empty ones)."""
    common = (record.chrom, record.pos, record.id or ".", record.ref)
    if not scores:
        return [(*common, ".", None, None, None, "no_alt")]

    def number(value):
        return None if value is None or math.isnan(value) else float(value)

    return [
        (*common, alt, number(s.llr), number(s.emb_dist), number(s.llr_pct), s.skip)
        for alt, s in zip(record.alts or (), scores)
    ]


def _write_part(
    output_format: str, path: Path, records: list, scores: list[list[VariantScore]], embedding_distance: bool,
    out: Path,
) -> None:
    """Write one chunk's records: VCF text lines (bgzipped for ``vcf.gz``, without the EOF block), TSV rows
    (a gzip member for ``tsv.gz``), or a Parquet file; no header (the merge writes it once)."""
    if output_format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [row for record, s in zip(records, scores) for row in _parquet_rows(record, s)]
        table = pa.Table.from_pylist([dict(zip(TSV_COLUMNS, row)) for row in rows], schema=_parquet_schema())
        pq.write_table(table, path)
    elif output_format in ("tsv", "tsv.gz"):
        with _text_writer(path, output_format == "tsv.gz") as handle:
            tsv = csv.writer(handle, delimiter="\t", lineterminator="\n")
            for record, record_scores in zip(records, scores):
                _write_tsv_rows(tsv, record, record_scores)
    else:
        lines = []
        for record, record_scores in zip(records, scores):
            _annotate_record(record, record_scores, embedding_distance)
            lines.append(str(record))
        if output_format == "vcf.gz":
            _write_bgzf_body(path, "".join(lines).encode())
        else:  # vcf, and bcf (converted at the merge)
            path.write_text("".join(lines))


def _text_writer(path: Path, gzipped: bool):
    """A text handle on ``path``; ``gzipped``: one gzip member with no name or time in it (reproducible)."""
    if not gzipped:
        return open(path, "w", newline="")
    return io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), newline="")


def _write_bgzf_body(path: Path, data: bytes) -> None:
    """BGZF blocks of ``data`` without the end-of-file block (parts are concatenated, the EOF block once)."""
    import pysam

    with pysam.BGZFile(str(path), "wb") as handle:
        handle.write(data)
    size = path.stat().st_size
    with open(path, "rb+") as handle:
        handle.seek(size - len(_BGZF_EOF))
        if handle.read() == _BGZF_EOF:
            handle.truncate(size - len(_BGZF_EOF))


def _merge_parts(output_format: str, header, parts: list[Path], path: Path, scratch: Path) -> None:
    """Join the chunks' parts, in order, under one header into ``path`` (formatted as ``output_format``)."""
    import pysam

    if output_format == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetWriter(path, _parquet_schema()) as writer:
            for part in parts:
                table_file = pq.ParquetFile(part)
                for group in range(table_file.num_row_groups):
                    writer.write_table(table_file.read_row_group(group))
        return
    if output_format in ("tsv", "tsv.gz"):
        header_part = scratch / "header.part"
        with _text_writer(header_part, output_format == "tsv.gz") as handle:
            handle.write("\t".join(TSV_COLUMNS) + "\n")
        concatenate([header_part, *parts], path)
        return
    if output_format == "vcf.gz":
        header_part, eof = scratch / "header.part", scratch / "eof.part"
        _write_bgzf_body(header_part, str(header).encode())
        eof.write_bytes(_BGZF_EOF)
        concatenate([header_part, *parts, eof], path)
        return
    header_part = scratch / "header.part"
    header_part.write_text(str(header))
    if output_format == "vcf":
        concatenate([header_part, *parts], path)
        return
    text = scratch / "merged.vcf"  # bcf: htslib converts the whole text
    concatenate([header_part, *parts], text)
    with pysam.VariantFile(str(text)) as reader, pysam.VariantFile(str(path), "wb", header=reader.header) as writer:
        for record in reader:
            writer.write(record)
    text.unlink()


def _declare_missing(header, scan: VcfScan | None, genome: Genome) -> None:
    """Add header lines for the contigs, INFO keys and FILTER ids the records use without declaring them (htslib
    refuses to write such records), and for INFO/END, which htslib adds to symbolic alleles."""
    if scan is None:
        return
    for contig in scan.contigs:
        if contig not in header.contigs:
            length = f",length={genome.lengths[contig]}" if contig in genome else ""
            header.add_line(f"##contig=<ID={contig}{length}>")
    if scan.symbolic and "END" not in header.info:
        header.add_line('##INFO=<ID=END,Number=1,Type=Integer,Description="End position of the variant">')
    for key, has_value in scan.info_keys.items():
        if key not in header.info:
            number, kind = (".", "String") if has_value else ("0", "Flag")
            header.add_line(
                f'##INFO=<ID={key},Number={number},Type={kind},Description="not declared in the input VCF">'
            )
    for name in sorted(scan.filters):
        if name not in header.filters:
            header.add_line(f'##FILTER=<ID={name},Description="not declared in the input VCF">')


def _add_genolm_info(
    header, window_tokens: int, rc: bool, embedding_distance: bool, vcf: Path, background: int = 0,
    background_seed: int = 0,
) -> None:
    strands = "mean of the forward and reverse-complement strands" if rc else "forward strand"
    _add_info(
        header,
        INFO_LLR,
        "A",
        "Float",
        "genolm zero-shot score per ALT allele: SNV: log P(alt k-mer) - log P(ref k-mer) at the masked token "
        "holding the variant; indel/MNV/SV: PLL(ALT window) - PLL(REF window), the log-probabilities of the "
        "changed tokens and one flank token each side, each masked in turn, windows sharing their flanks; "
        f"{window_tokens}-token windows centred on the variant; {strands}",
        vcf,
    )
    if background:
        _add_info(
            header,
            INFO_PCT,
            "A",
            "Float",
            f"genolm: percentage of {background} random SNVs of the reference (seed {background_seed}) whose "
            "GENOLM_LLR is <= this allele's",
            vcf,
        )
    if embedding_distance:
        _add_info(
            header,
            INFO_EMB,
            "A",
            "Float",
            "genolm: L2 distance between the mean final-layer embeddings of the unmasked reference and "
            f"alternative windows per ALT allele; {strands}",
            vcf,
        )
    _add_info(
        header,
        INFO_SKIP,
        "1",
        "String",
        "Why genolm did not score this record (or one of its ALT alleles): "
        + "; ".join(f"{key} = {text}" for key, text in SKIP_REASONS.items()),
        vcf,
    )


def _add_info(header, key: str, number: str, kind: str, description: str, vcf: Path | None = None) -> None:
    if key in header.info:
        existing = header.info[key]
        if (str(existing.number), str(existing.type)) == (number, kind):
            return  # re-scoring a genolm output: keep its header line, values are replaced
        warnings.warn(
            f"{vcf}: INFO {key} is declared Number={existing.number},Type={existing.type}; replacing its "
            f"header line with Number={number},Type={kind} (its values are replaced)",
            stacklevel=3,
        )
        header.info.remove_header(key)
    description = description.replace('"', "'")
    header.add_line(f'##INFO=<ID={key},Number={number},Type={kind},Description="{description}">')


def _read_chunk(records: Iterable, size: int, vcf: Path, scan: VcfScan | None, done: int) -> list:
    chunk = []
    while len(chunk) < size:
        try:
            chunk.append(next(records))
        except StopIteration:
            break
        except (OSError, ValueError) as err:
            index = done + len(chunk)
            where = (
                f"line {scan.line_numbers[index]}"
                if scan and index < len(scan.line_numbers)
                else f"record {index + 1}"
            )
            raise InputDataError(f"{vcf}: {where}: pysam cannot parse the record: {err}") from None
    return chunk


def _tally(report: VepReport, scores: list[VariantScore]) -> None:
    report.alleles += len(scores)
    for score in scores:
        if score.skip is None:
            report.scored += 1
        else:
            report.skipped[score.skip] = report.skipped.get(score.skip, 0) + 1
    if not scores:
        report.skipped["no_alt"] = report.skipped.get("no_alt", 0) + 1


def _record_skip(scores: list[VariantScore]) -> str | None:
    if not scores:
        return "no_alt"
    reasons = [s.skip for s in scores if s.skip is not None]
    return reasons[0] if reasons else None


def _annotate_record(record, scores: list[VariantScore], embedding_distance: bool) -> None:
    for key in (INFO_LLR, INFO_EMB, INFO_SKIP, INFO_PCT):
        if key in record.info:
            del record.info[key]
    if scores and any(s.skip is None for s in scores):
        record.info[INFO_LLR] = tuple(s.llr for s in scores)
        if embedding_distance:
            record.info[INFO_EMB] = tuple(s.emb_dist for s in scores)
        if any(s.llr_pct is not None for s in scores):
            record.info[INFO_PCT] = tuple(s.llr_pct for s in scores)
    skip = _record_skip(scores)
    if skip is not None:
        record.info[INFO_SKIP] = skip


def _fmt(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


def _write_tsv_rows(tsv, record, scores: list[VariantScore]) -> None:
    common = [record.chrom, record.pos, record.id or ".", record.ref]
    if not scores:
        tsv.writerow([*common, ".", "", "", "", "no_alt"])
    for alt, score in zip(record.alts or (), scores):
        tsv.writerow([*common, alt, _fmt(score.llr), _fmt(score.emb_dist), _fmt(score.llr_pct), score.skip or ""])
