"""Labelled fine-tuning sets derived from a genome and its GFF3 annotation (``genolm data make-task``).

Three tasks, each a table with a ``sequence`` column, a label column, and the window's coordinates:

``splice_sites``
    Windows of ``window`` bp centred on annotated exon-intron boundaries, in transcript orientation (reverse
    complemented on the minus strand). The boundary lies between ``sequence[window // 2 - 1]`` and
    ``sequence[window // 2]``: a donor window has the intron's first two bases (``GT`` for canonical
    introns) at ``sequence[window // 2 : window // 2 + 2]``, an acceptor window has the intron's last two
    (``AG``) at ``sequence[window // 2 - 2 : window // 2]``. Negatives ("none") are decoys with the same
    geometry, centred on ``GT`` / ``AG`` dinucleotides inside annotated transcripts that are not annotated
    boundaries (hard negatives, as in the Plant Genomic Benchmark splice tasks), drawn gene by gene so that
    every gene contributes as many decoys as sites. ``label``: 0 none, 1 donor, 2 acceptor (0/1 with
    ``sites="donor"`` or ``"acceptor"``). Non-canonical introns are kept (``motif`` column) unless
    ``canonical_only``.
``promoters``
    Windows of ``upstream + downstream`` bp around each annotated transcript start (the 5' end of the
    transcript feature; with CDS-only annotations this is the start codon), in transcript orientation, the
    first transcribed base at ``sequence[upstream]``. Negatives are background windows of the same length
    on a random strand, each matched to one promoter: drawn within ``BACKGROUND_RADIUS`` window lengths of
    it, at least ``upstream + downstream`` bp from any promoter window, and picked among ``GC_CANDIDATES``
    random draws as the one closest to it in GC content (local, GC-matched background). ``label``: 1
    promoter, 0 background.
``cds_tokens``
    Per-nucleotide annotation labels for gene-annotation models: windows of ``window`` bp tiling the
    annotated part of each sequence, forward strand, ``labels`` a list of ``window`` integers: 0 intergenic,
    1 non-coding exon (UTRs and exons of non-coding RNAs), 2 CDS, 3 intron; -100 (ignored by the loss) inside
    genes whose structure cannot be read from the GFF3 (trans-spliced genes, genes without exon or CDS
    lines). Where isoforms disagree, CDS > exon > intron. Labels do not depend on strand. With CDS-only
    annotations, UTRs are labelled intergenic.

Every row has ``name`` (``seq_id:first-last(strand)``, 1-based closed, unique), ``seq_id``, ``start``,
``end`` (0-based half-open, forward strand, like the rest of genolm's Python API) and ``strand``. Rows are
split into train / validation / test by held-out chromosomes or regions, or, when none are given, by blocks
of whole gene loci (see :func:`assign_splits`), so that windows of one gene never land in two splits.
Sequences are upper case (soft-masking is dropped). Trans-spliced genes (``exception=trans-splicing``) give
no splice sites and no promoter.

Background windows and ``cds_tokens`` tiles come only from the annotated part of each sequence: from
``margin`` bp before its first annotated gene to ``margin`` bp after its last one. This keeps partially
annotated excerpts from yielding unannotated genes as negatives.
"""

from __future__ import annotations

import bisect
import json
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import defaults
from ..errors import ConfigError, InputDataError
from ..genome import GFF3, Region, Transcript, read_records, reverse_complement
from ..genome.gff3 import MIN_INTRON_LENGTH
from ..outputs import atomic_folder, check_outputs

logger = logging.getLogger(__name__)

TASKS = ("splice_sites", "promoters", "cds_tokens")
SPLITS = ("train", "validation", "test")
IGNORE_INDEX = -100
CDS_TOKEN_LABELS = ("intergenic", "noncoding_exon", "CDS", "intron")
DEFAULT_WINDOWS = {"splice_sites": 400, "cds_tokens": 6000}
DEFAULT_UPSTREAM, DEFAULT_DOWNSTREAM = 250, 50
GC_CANDIDATES = 32  # random background draws per positive, the closest in GC is kept
BACKGROUND_RADIUS = 20  # background is drawn within this many window lengths of its promoter


def gc_fraction(seq: str) -> float:
    acgt = len(seq) - seq.count("N")
    return (seq.count("G") + seq.count("C")) / acgt if acgt else 0.0


# ------------------------------------------------------------------------------------------------------
# intervals and regions
# ------------------------------------------------------------------------------------------------------
def _as_regions(items: Iterable[str | Region]) -> list[Region]:
    return [item if isinstance(item, Region) else Region.parse(item) for item in items]


def gene_loci(annotation: GFF3) -> dict[str, list[tuple[int, int, str]]]:
    """Merged spans of overlapping genes per sequence: ``seq_id -> [(start, end, name)]`` (0-based half-open,
    sorted). ``name`` is the first gene's ID."""
    spans: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for gene in annotation.genes():
        spans[gene.seqid].append((gene.start - 1, gene.end, gene.id or f"line{gene.line}"))
    loci = {}
    for seq_id, items in spans.items():
        merged: list[tuple[int, int, str]] = []
        for start, end, name in sorted(items):
            if merged and start < merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end), merged[-1][2])
            else:
                merged.append((start, end, name))
        loci[seq_id] = merged
    return loci


def annotated_extent(
    loci: dict[str, list[tuple[int, int, str]]], lengths: dict[str, int], margin: int
) -> dict:
    """``seq_id -> (start, end)``: from ``margin`` bp before the first locus to ``margin`` after the last."""
    return {
        seq_id: (max(0, items[0][0] - margin), min(lengths[seq_id], max(e for _, e, _ in items) + margin))
        for seq_id, items in loci.items()
        if seq_id in lengths
    }


# ------------------------------------------------------------------------------------------------------
# splits
# ------------------------------------------------------------------------------------------------------
def assign_splits(
    rows: pd.DataFrame,
    loci: dict[str, list[tuple[int, int, str]]],
    *,
    test_chromosomes: Sequence[str] = (),
    validation_chromosomes: Sequence[str] = (),
    test_regions: Sequence[str | Region] = (),
    validation_regions: Sequence[str | Region] = (),
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    block_size: int = 0,
    seed: int = 0,
) -> pd.Series:
    """Split name per row (``"train"``, ``"validation"``, ``"test"``, or ``None`` for a dropped row).

    With held-out chromosomes or regions, a row inside one goes to that split, a row overlapping one only
    partly is dropped, and every other row is train. Without any, blocks of whole gene loci are held out:
    consecutive loci (merged overlapping genes) are grouped into blocks spanning at least ``block_size`` bp,
    each sequence is cut into one territory per block with boundaries half-way between neighbouring blocks,
    and the blocks are dealt out in a ``seed``-shuffled order to the split furthest below its share
    (``test_fraction``, ``validation_fraction``, the rest train) of the rows, counted by window centre; with
    three blocks or more, test and validation get at least one each. Every row goes to the split of the
    territory that contains it; rows crossing a boundary between two territories are dropped.
    """
    held_out = {
        "test": [Region(c) for c in test_chromosomes] + _as_regions(test_regions),
        "validation": [Region(c) for c in validation_chromosomes] + _as_regions(validation_regions),
    }
    triples = list(zip(rows["seq_id"], rows["start"], rows["end"]))
    if held_out["test"] or held_out["validation"]:
        result = []
        for seq_id, start, end in triples:
            split = "train"
            for name, regions in held_out.items():
                if any(r.contains(seq_id, start, end) for r in regions):
                    split = name
                    break
                if any(r.overlaps(seq_id, start, end) for r in regions):
                    split = None
                    break
            result.append(split)
        return pd.Series(result, index=rows.index, dtype=object)

    # Blocks of consecutive loci, at least `block_size` bp from first start to last end.
    blocks: list[tuple[str, int, int]] = []  # (seq_id, first start, last end)
    for seq_id, items in sorted(loci.items()):
        for start, end, _ in items:
            if blocks and blocks[-1][0] == seq_id and blocks[-1][2] - blocks[-1][1] < block_size:
                blocks[-1] = (seq_id, blocks[-1][1], max(blocks[-1][2], end))
            else:
                blocks.append((seq_id, start, end))
    # Territories: each block owns the sequence up to half-way to its neighbours.
    bounds: dict[str, list[int]] = defaultdict(list)
    block_ids: dict[str, list[int]] = defaultdict(list)
    for i, (seq_id, start, _end) in enumerate(blocks):
        if block_ids[seq_id]:
            previous_end = blocks[block_ids[seq_id][-1]][2]
            bounds[seq_id].append((previous_end + start) // 2)
        block_ids[seq_id].append(i)

    def territories(seq_id: str, start: int, end: int) -> list[int]:
        first = bisect.bisect_right(bounds[seq_id], start)
        last = bisect.bisect_right(bounds[seq_id], end - 1)
        return block_ids[seq_id][first : last + 1]

    # Rows per block (by window centre) weight the draw, so splits get about the requested share of rows.
    weight = [0] * len(blocks)
    for seq_id, start, end in triples:
        if seq_id in block_ids:
            weight[territories(seq_id, (start + end) // 2, (start + end) // 2 + 1)[0]] += 1
    order = list(range(len(blocks)))
    random.Random(seed).shuffle(order)
    targets = {"test": test_fraction, "validation": validation_fraction}
    targets["train"] = 1.0 - test_fraction - validation_fraction
    total = max(1, sum(weight))
    taken = dict.fromkeys(targets, 0)
    block_split: list[str] = [""] * len(blocks)
    forced = [name for name in ("test", "validation") if targets[name] > 0] if len(blocks) >= 3 else []
    for rank, index in enumerate(order):
        if rank < len(forced):
            split = forced[rank]
        else:
            split = max(targets, key=lambda name: targets[name] * total - taken[name])
        block_split[index] = split
        taken[split] += weight[index]
    result = []
    for seq_id, start, end in triples:
        if seq_id not in block_ids:
            result.append("train")
            continue
        splits = {block_split[i] for i in territories(seq_id, start, end)}
        result.append(splits.pop() if len(splits) == 1 else None)
    return pd.Series(result, index=rows.index, dtype=object)


# ------------------------------------------------------------------------------------------------------
# windows
# ------------------------------------------------------------------------------------------------------
def _oriented_window(boundary: int, strand: str, window: int) -> tuple[int, int]:
    """Forward-strand ``[start, end)`` of a window whose oriented index ``window // 2`` is the forward base
    ``boundary`` (0-based)."""
    if strand == "+":
        start = boundary - window // 2
    else:
        start = boundary + 1 + window // 2 - window
    return start, start + window


def _fetch(seq: str, start: int, end: int, strand: str) -> str:
    piece = seq[start:end]
    return piece if strand == "+" else reverse_complement(piece)


def _site_boundary(kind: str, strand: str, intron: tuple[int, int]) -> int:
    """0-based forward coordinate of the first base after the exon-intron boundary (transcript orientation)."""
    s, e = intron  # 1-based closed
    if kind == "donor":
        return s - 1 if strand == "+" else e - 1
    return e if strand == "+" else s - 2


def _site_position(kind: str, strand: str, boundary: int) -> int:
    """1-based coordinate of the site's defining intron base (the G of GT for donors, of AG for acceptors)."""
    if kind == "donor":
        return boundary + 1
    return boundary if strand == "+" else boundary + 2


def is_canonical(seq: str, intron: tuple[int, int], strand: str) -> bool:
    """Whether an intron (1-based closed) reads GT...AG or GC...AG in transcript orientation."""
    s, e = intron
    motif = seq[s - 1 : s + 1] + seq[e - 2 : e]
    if strand == "-":
        motif = reverse_complement(motif)  # = donor pair + acceptor pair in transcript orientation
    return motif in ("GTAG", "GCAG")


def _decoy_boundaries(seq: str, start: int, end: int, strand: str, kind: str) -> list[int]:
    """Boundaries of every GT (donor) or AG (acceptor) in transcript orientation inside ``[start, end)``."""
    # Forward-strand pattern and offset from its 0-based position to the boundary (see _site_boundary).
    pattern, shift = {
        ("donor", "+"): ("GT", 0),
        ("donor", "-"): ("AC", 1),
        ("acceptor", "+"): ("AG", 2),
        ("acceptor", "-"): ("CT", -1),
    }[(kind, strand)]
    found, i = [], seq.find(pattern, start, end)
    while i != -1:
        found.append(i + shift)
        i = seq.find(pattern, i + 1, end)
    return found


def splice_site_rows(
    transcripts: list[Transcript],
    seq_id: str,
    seq: str,
    window: int,
    sites: str = "both",
    negatives_per_positive: float = 1.0,
    min_intron_length: int = MIN_INTRON_LENGTH,
    canonical_only: bool = False,
    rng: random.Random | None = None,
) -> list[dict[str, Any]]:
    """Donor / acceptor / decoy windows of one sequence (see the module docstring)."""
    rng = rng or random.Random(0)
    kinds = ("donor", "acceptor") if sites == "both" else (sites,)
    label_of = {kind: i + 1 for i, kind in enumerate(kinds)}
    positives: dict[tuple[str, str, int], dict[str, Any]] = {}
    spans: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)  # (gene, strand) -> spans
    for tx in transcripts:
        if tx.seqid != seq_id or tx.trans_spliced:
            continue
        spans[(tx.gene_id, tx.strand)].append((tx.start - 1, tx.end))
        for intron in tx.introns(min_intron_length):
            if canonical_only and not is_canonical(seq, intron, tx.strand):
                continue
            for kind in kinds:
                boundary = _site_boundary(kind, tx.strand, intron)
                key = (kind, tx.strand, boundary)
                if key in positives:
                    positives[key]["transcript"] += f",{tx.id}"
                    continue
                positives[key] = {"transcript": tx.id, "gene": tx.gene_id}
    rows = []
    for (kind, strand, boundary), info in positives.items():
        rows.append(_splice_row(seq, seq_id, kind, strand, boundary, window, label_of[kind], **info))
    # Decoys, gene by gene (so each gene, and each split, keeps the requested balance): the same geometry on
    # GT / AG inside the gene's transcripts, never at an annotated boundary of that kind.
    per_gene = Counter((info["gene"], kind) for (kind, _, _), info in positives.items())
    taken: set[tuple[str, str, int]] = set()
    for gene, strand in sorted(spans):
        for kind in kinds:
            want = round(per_gene[(gene, kind)] * negatives_per_positive)
            if want == 0:
                continue
            candidates = sorted(
                {
                    boundary
                    for start, end in spans[(gene, strand)]
                    for boundary in _decoy_boundaries(seq, start, end, strand, kind)
                    if (kind, strand, boundary) not in positives and (kind, strand, boundary) not in taken
                }
            )
            for boundary in rng.sample(candidates, min(want, len(candidates))):
                taken.add((kind, strand, boundary))
                rows.append(_splice_row(seq, seq_id, f"{kind}_decoy", strand, boundary, window, 0, "", gene))
    return [row for row in rows if row is not None]


def _splice_row(seq, seq_id, kind, strand, boundary, window, label, transcript, gene):
    start, end = _oriented_window(boundary, strand, window)
    if start < 0 or end > len(seq):
        return None
    sequence = _fetch(seq, start, end, strand)
    half = window // 2
    site_kind = kind.removesuffix("_decoy")
    motif = sequence[half : half + 2] if site_kind == "donor" else sequence[half - 2 : half]
    return {
        "sequence": sequence,
        "label": label,
        "seq_id": seq_id,
        "start": start,
        "end": end,
        "strand": strand,
        "kind": kind,
        "site": _site_position(site_kind, strand, boundary),
        "motif": motif,
        "transcript": transcript,
        "gene": gene,
    }


def promoter_rows(
    transcripts: list[Transcript],
    seq_id: str,
    seq: str,
    extent: tuple[int, int],
    upstream: int = DEFAULT_UPSTREAM,
    downstream: int = DEFAULT_DOWNSTREAM,
    negatives_per_positive: float = 1.0,
    rng: random.Random | None = None,
) -> list[dict[str, Any]]:
    """Promoter windows around transcript starts and GC-matched background windows of one sequence."""
    rng = rng or random.Random(0)
    length = upstream + downstream
    positives: dict[tuple[str, int], dict[str, Any]] = {}
    for tx in transcripts:
        if tx.seqid != seq_id or tx.trans_spliced:
            continue
        tss = tx.five_prime - 1  # 0-based
        key = (tx.strand, tss)
        if key in positives:
            positives[key]["transcript"] += f",{tx.id}"
        else:
            positives[key] = {"transcript": tx.id, "gene": tx.gene_id}
    rows, taken = [], []
    for (strand, tss), info in sorted(positives.items(), key=lambda item: item[0][1]):
        start = tss - upstream if strand == "+" else tss + 1 + upstream - length
        end = start + length
        if start < 0 or end > len(seq):
            continue
        sequence = _fetch(seq, start, end, strand)
        taken.append((start, end))
        rows.append(
            dict(
                sequence=sequence,
                label=1,
                seq_id=seq_id,
                start=start,
                end=end,
                strand=strand,
                kind="promoter",
                tss=tss + 1,
                gc=gc_fraction(sequence),
                **info,
            )
        )
    # Background: near the promoter it is matched to (within BACKGROUND_RADIUS window lengths, inside the
    # annotated extent), at least `length` bp away from every promoter window, closest in GC of the draws.
    taken.sort()
    starts = [s for s, _ in taken]

    def clear(start: int) -> bool:
        i = bisect.bisect_left(starts, start - 2 * length)
        for s, e in taken[i:]:
            if s >= start + 2 * length:
                break
            if start < e + length and start + length > s - length:
                return False
        return True

    want = round(len(rows) * negatives_per_positive)
    used: set[int] = set()
    matched = [rows[i % len(rows)] for i in range(want)] if rows else []
    for positive in matched:
        target = positive["gc"]
        lo = max(extent[0], positive["start"] - BACKGROUND_RADIUS * length)
        hi = min(extent[1], positive["end"] + BACKGROUND_RADIUS * length) - length
        if hi <= lo:
            continue
        best = None
        for _ in range(GC_CANDIDATES):
            start = rng.randrange(lo, hi)
            if start in used or not clear(start):
                continue
            sequence = seq[start : start + length]
            if sequence.count("N") > length // 10:
                continue
            gap = abs(gc_fraction(sequence) - target)
            if best is None or gap < best[0]:
                best = (gap, start, sequence)
        if best is None:
            continue
        _, start, sequence = best
        used.add(start)
        strand = rng.choice("+-")
        sequence = sequence if strand == "+" else reverse_complement(sequence)
        rows.append(
            dict(
                sequence=sequence,
                label=0,
                seq_id=seq_id,
                start=start,
                end=start + length,
                strand=strand,
                kind="background",
                tss=-1,
                gc=gc_fraction(sequence),
                transcript="",
                gene=positive["gene"],
            )
        )
    return rows


def nucleotide_labels(
    transcripts: list[Transcript], annotation: GFF3, seq_id: str, length: int
) -> np.ndarray:
    """Per-base labels of one sequence, shape (length,), int16: see ``CDS_TOKEN_LABELS`` and -100."""
    labels = np.zeros(length, dtype=np.int16)
    mine = [tx for tx in transcripts if tx.seqid == seq_id]
    structured_genes = {tx.gene_id for tx in mine if not tx.trans_spliced}
    for gene in annotation.genes():
        if gene.seqid == seq_id and gene.id not in structured_genes:
            labels[gene.start - 1 : gene.end] = IGNORE_INDEX
    for tx in mine:
        if tx.trans_spliced:
            labels[tx.start - 1 : tx.end] = IGNORE_INDEX
    code = {name: i for i, name in enumerate(CDS_TOKEN_LABELS)}
    # One pass per class in increasing priority, each overwriting the previous ones: intron < exon < CDS.
    for tx in mine:
        for s, e in tx.introns(min_length=1):
            labels[s - 1 : e] = code["intron"]
    for tx in mine:
        if not tx.trans_spliced:
            for s, e in tx.exons:
                labels[s - 1 : e] = code["noncoding_exon"]
    for tx in mine:
        for s, e in tx.cds:
            labels[s - 1 : e] = code["CDS"]
    return labels


def cds_token_rows(
    transcripts: list[Transcript],
    annotation: GFF3,
    seq_id: str,
    seq: str,
    extent: tuple[int, int],
    window: int,
    stride: int | None = None,
) -> list[dict[str, Any]]:
    """Windows tiling the annotated extent of one sequence, with per-nucleotide labels."""
    stride = stride or window
    labels = nucleotide_labels(transcripts, annotation, seq_id, len(seq))
    lo, hi = extent
    if hi - lo < window:
        return []
    starts = list(range(lo, hi - window + 1, stride))
    if starts[-1] != hi - window:
        starts.append(hi - window)  # last window flush with the end of the extent
    rows = []
    for start in starts:
        window_labels = labels[start : start + window]
        if (window_labels == IGNORE_INDEX).all():
            continue
        rows.append(
            dict(
                sequence=seq[start : start + window],
                labels=window_labels.astype(np.int64).tolist(),
                seq_id=seq_id,
                start=start,
                end=start + window,
                strand="+",
            )
        )
    return rows


# ------------------------------------------------------------------------------------------------------
# the task builder
# ------------------------------------------------------------------------------------------------------
def build_task(
    fasta: str | Path,
    gff3: str | Path,
    task: str,
    *,
    window: int | None = None,
    stride: int | None = None,
    sites: str = "both",
    upstream: int = DEFAULT_UPSTREAM,
    downstream: int = DEFAULT_DOWNSTREAM,
    negatives_per_positive: float = 1.0,
    min_intron_length: int = MIN_INTRON_LENGTH,
    regions: Sequence[str | Region] = (),
    margin: int | None = None,
    test_chromosomes: Sequence[str] = (),
    validation_chromosomes: Sequence[str] = (),
    test_regions: Sequence[str | Region] = (),
    validation_regions: Sequence[str | Region] = (),
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    block_size: int | None = None,
    canonical_only: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Build one task's rows, with a ``split`` column (see the module docstring and :func:`assign_splits`).

    Args:
        fasta: genome FASTA (plain, gzip or bgzip); record ids must match the GFF3's column 1.
        gff3: annotation (GFF3, 1-based closed).
        task: one of ``TASKS``.
        window: window length in bp (``splice_sites``: 400, ``cds_tokens``: 6000); ignored by ``promoters``.
        stride: step between ``cds_tokens`` windows (default: ``window``, no overlap).
        sites: ``splice_sites`` only: ``"both"`` (3 classes), ``"donor"`` or ``"acceptor"`` (binary).
        upstream, downstream: ``promoters`` only: bp before / from the transcript start.
        negatives_per_positive: negatives drawn per positive (``splice_sites``, ``promoters``).
        min_intron_length: shorter exon gaps are not treated as introns (annotation artefacts).
        regions: keep only rows fully inside these regions (``"chr"`` or ``"chr:start-end"``, 1-based).
        margin: bp around the annotated genes used for background and tiles (default: the window length).
        test_chromosomes, validation_chromosomes, test_regions, validation_regions: held-out data.
        test_fraction, validation_fraction: shares of rows held out, as blocks of gene loci, when no held-out
            chromosome or region is given.
        block_size: smallest span of a held-out block of loci (default: 10 windows).
        canonical_only: ``splice_sites`` only: keep only introns with canonical motifs (GT/GC...AG).
        seed: seed of every random choice (decoys, background, locus split).

    Returns:
        A DataFrame; its columns are listed by :func:`task_schema`.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if sites not in ("both", "donor", "acceptor"):
        raise ConfigError(f"sites must be 'both', 'donor' or 'acceptor', got {sites!r}")
    window = window or DEFAULT_WINDOWS.get(task)
    length = upstream + downstream if task == "promoters" else window
    if length is None or length < 4:
        raise ConfigError(f"window length must be at least 4 bp, got {length}")
    margin = length if margin is None else margin
    annotation = GFF3(gff3)
    transcripts = annotation.transcripts()
    loci = gene_loci(annotation)
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    lengths: dict[str, int] = {}
    annotated = set(annotation.seqids)
    for seq_id, seq in ((i, s.upper()) for i, s in read_records(fasta, annotated)):
        lengths[seq_id] = len(seq)
        extent = (
            annotated_extent({seq_id: loci[seq_id]}, lengths, margin).get(seq_id) if seq_id in loci else None
        )
        if task == "splice_sites":
            rows += splice_site_rows(
                transcripts,
                seq_id,
                seq,
                window,
                sites,
                negatives_per_positive,
                min_intron_length,
                canonical_only,
                rng,
            )
        elif extent is None:
            continue
        elif task == "promoters":
            rows += promoter_rows(
                transcripts, seq_id, seq, extent, upstream, downstream, negatives_per_positive, rng
            )
        else:
            rows += cds_token_rows(transcripts, annotation, seq_id, seq, extent, window, stride)
    missing = sorted({tx.seqid for tx in transcripts} - set(lengths))
    if missing:
        raise InputDataError(f"{gff3}: sequence ids {missing[:5]} are not records of {fasta}")
    for tx in transcripts:
        if tx.end > lengths[tx.seqid]:
            raise InputDataError(
                f"{gff3}: {tx.id} ends at {tx.end}, past the end of {tx.seqid} ({lengths[tx.seqid]} bp)"
            )
    table = pd.DataFrame(rows, columns=task_schema(task))
    table["name"] = [
        f"{c}:{s + 1}-{e}({d})" for c, s, e, d in zip(table.seq_id, table.start, table.end, table.strand)
    ]
    if regions:
        keep = _as_regions(regions)
        inside = [
            any(r.contains(*t) for r in keep) for t in zip(table["seq_id"], table["start"], table["end"])
        ]
        table = table[np.array(inside, dtype=bool)].reset_index(drop=True)
        loci = {
            seq_id: [x for x in items if any(r.overlaps(seq_id, x[0], x[1]) for r in keep)]
            for seq_id, items in loci.items()
        }
        loci = {k: v for k, v in loci.items() if v}
    split_options = dict(
        test_chromosomes=test_chromosomes,
        validation_chromosomes=validation_chromosomes,
        test_regions=test_regions,
        validation_regions=validation_regions,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        seed=seed,
    )
    if block_size is None:
        block_size = default_block_size(table, loci, length, **split_options)
    table["split"] = assign_splits(table, loci, block_size=block_size, **split_options)
    dropped = int(table["split"].isna().sum())
    if dropped:
        logger.info("dropped %d windows that cross a split boundary", dropped)
    table = table[table["split"].notna()].sort_values(["split", "seq_id", "start", "strand"], kind="stable")
    return table.reset_index(drop=True)


def default_block_size(rows: pd.DataFrame, loci: dict[str, list[tuple[int, int, str]]], window: int, **split_options) -> int:
    """The largest held-out block span, from 10 windows down to one, that gives every split with a non-zero
    share at least one row while train stays the largest split; 10 windows when none does.

    On a small annotation (a few genes of a 1 Mb excerpt) blocks of 10 windows are too few to deal one to
    each split, and validation and test would come out empty.
    """
    wanted = ["train"] + [
        name for name in ("test", "validation") if split_options[f"{name}_fraction"] > 0
    ]
    for windows in (10, 5, 3, 2, 1):
        sizes = assign_splits(rows, loci, block_size=windows * window, **split_options).value_counts()
        if all(sizes.get(name, 0) > 0 for name in wanted) and sizes["train"] == sizes.max():
            return windows * window
    return 10 * window


def small_split_warnings(
    task: str, counts: dict[str, dict[str, int]], options: dict[str, Any], batch_rows: int
) -> list[str]:
    """One message per split that is empty or smaller than one batch of ``batch_rows``, naming the fix."""
    messages = []
    for split, count in counts.items():
        rows = count["rows"]
        if rows >= batch_rows or (split != "train" and not _holds_out(split, options)):
            continue
        state = "is empty" if rows == 0 else f"has only {rows} rows (fewer than one batch of {batch_rows})"
        fix = (
            "more annotated genes (a larger genome or GFF3)"
            + (", a smaller --window" if task != "promoters" else "")
            + (", a larger --" + split + "-fraction or held-out --" + split + "-regions" if split != "train" else "")
        )
        messages.append(f"split {split!r} {state}; use {fix}")
    return messages


def _holds_out(split: str, options: dict[str, Any]) -> bool:
    if options.get(f"{split}_chromosomes") or options.get(f"{split}_regions"):
        return True
    if options.get("test_chromosomes") or options.get("test_regions") or options.get(
        "validation_chromosomes"
    ) or options.get("validation_regions"):
        return False
    default = {"test": 0.2, "validation": 0.1}[split]
    return options.get(f"{split}_fraction", default) > 0


def task_schema(task: str) -> list[str]:
    """Columns of a task table, in order (``split`` is added by :func:`build_task`)."""
    coords = ["name", "seq_id", "start", "end", "strand"]
    if task == "splice_sites":
        return ["sequence", "label", *coords, "kind", "site", "motif", "transcript", "gene"]
    if task == "promoters":
        return ["sequence", "label", *coords, "kind", "tss", "gc", "transcript", "gene"]
    return ["sequence", "labels", *coords]


def label_names(task: str, sites: str = "both") -> list[str]:
    """Class names, index = label value."""
    if task == "splice_sites":
        return ["none", "donor", "acceptor"] if sites == "both" else ["none", sites]
    if task == "promoters":
        return ["background", "promoter"]
    return list(CDS_TOKEN_LABELS)


def make_task(
    fasta: str | Path,
    gff3: str | Path,
    task: str,
    out_dir: str | Path,
    *,
    file_format: str = "parquet",
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Build a task (:func:`build_task`) and write ``train``, ``validation`` and ``test`` files plus
    ``task.json`` (schema, label names, row counts, options) to ``out_dir``.

    ``out_dir`` must be new or empty unless ``overwrite`` (it is then replaced as a whole); it is filled under
    a temporary name and appears complete or not at all.

    ``file_format`` is ``"parquet"`` (default) or ``"csv"``; in CSV the per-nucleotide ``labels`` of
    ``cds_tokens`` are written as JSON lists (``[0,0,2,...]``). Returns the ``task.json`` content.
    """
    if file_format not in ("parquet", "csv"):
        raise ConfigError(f"file_format must be 'parquet' or 'csv', got {file_format!r}")
    out_dir = Path(out_dir)
    check_outputs({}, {"fasta": fasta, "gff3": gff3}, folders={"out_dir": out_dir}, overwrite=overwrite)
    table = build_task(fasta, gff3, task, **options)
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        info = _write_task(table, tmp, fasta, gff3, task, file_format, options)
    for message in small_split_warnings(task, info["counts"], options, defaults.SMALL_SPLIT_ROWS):
        logger.warning("%s: %s", out_dir, message)
    return info


def _write_task(
    table, out_dir: Path, fasta, gff3, task: str, file_format: str, options: dict[str, Any]
) -> dict[str, Any]:
    label_column = "labels" if task == "cds_tokens" else "label"
    names = label_names(task, options.get("sites", "both"))
    counts: dict[str, dict[str, int]] = {}
    files = {}
    for split in SPLITS:
        part = table[table["split"] == split].drop(columns="split").reset_index(drop=True)
        path = out_dir / f"{split}.{file_format}"
        if file_format == "parquet":
            part.to_parquet(path, index=False)
        elif task == "cds_tokens":
            as_json = [json.dumps(list(map(int, x)), separators=(",", ":")) for x in part["labels"]]
            part.assign(labels=as_json).to_csv(path, index=False)
        else:
            part.to_csv(path, index=False)
        files[split] = path.name
        if task == "cds_tokens":
            flat = np.concatenate([np.asarray(x) for x in part["labels"]]) if len(part) else np.zeros(0, int)
            counts[split] = {"rows": len(part), **{n: int((flat == i).sum()) for i, n in enumerate(names)}}
            counts[split]["ignored"] = int((flat == IGNORE_INDEX).sum())
        else:
            counts[split] = {
                "rows": len(part),
                **{n: int((part["label"] == i).sum()) for i, n in enumerate(names)},
            }
    window = options.get("window") or DEFAULT_WINDOWS.get(task)
    info = {
        "task": task,
        "problem_type": "token_classification" if task == "cds_tokens" else "classification",
        "label_column": label_column,
        "label_names": names,
        "ignore_index": IGNORE_INDEX if task == "cds_tokens" else None,
        "columns": task_schema(task),
        "coordinates": "seq_id, start, end: 0-based half-open on the forward strand; site/tss: 1-based",
        "sequence_length": options.get("upstream", DEFAULT_UPSTREAM)
        + options.get("downstream", DEFAULT_DOWNSTREAM)
        if task == "promoters"
        else window,
        "files": files,
        "counts": counts,
        "fasta": str(fasta),
        "gff3": str(gff3),
        "options": {
            k: (list(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in options.items()
        },
    }
    (out_dir / "task.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


__all__ = [
    "CDS_TOKEN_LABELS",
    "IGNORE_INDEX",
    "TASKS",
    "assign_splits",
    "build_task",
    "label_names",
    "make_task",
    "nucleotide_labels",
    "task_schema",
]
