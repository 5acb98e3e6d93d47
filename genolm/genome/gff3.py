"""A small GFF3 reader and the transcript models that task builders need.

Coordinates follow GFF3: 1-based and fully closed, ``[start, end]``. A feature written on several lines that
share one ``ID`` (a multi-segment CDS, or a trans-spliced gene) keeps one :class:`Feature` per line; the
lines are grouped by :class:`GFF3`. Transcripts are the features that have ``exon`` or ``CDS`` children;
their exon structure comes from the ``exon`` children, or from the ``CDS`` children when an annotation has
no exons (CDS-only annotations, or chloroplast genes whose CDS hangs directly off the gene).

Trans-spliced features (``exception=trans-splicing``, as in the chloroplast rps12 genes) cannot be
described in GFF3: the order of their segments is not recoverable from the coordinates, and their
segments may lie on both strands. :class:`Transcript` marks them with ``trans_spliced=True`` and gives them
no introns, so callers skip them or treat them specially.
"""

from __future__ import annotations

import gzip
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from ..errors import InputDataError

# Feature types that describe a sequence, not a gene (ignored when looking for genes).
SEQUENCE_REGION_TYPES = frozenset({"region", "chromosome", "contig", "scaffold", "supercontig", "source"})
# Introns shorter than this are treated as annotation artefacts (frame-shift fixes), not as introns.
MIN_INTRON_LENGTH = 20


@dataclass
class Feature:
    """One GFF3 line. ``start``/``end`` are 1-based closed; ``attributes`` map a tag to its values."""

    seqid: str
    source: str
    type: str
    start: int
    end: int
    score: float | None
    strand: str
    phase: int | None
    attributes: dict[str, list[str]]
    line: int

    @property
    def id(self) -> str | None:
        values = self.attributes.get("ID")
        return values[0] if values else None

    @property
    def parents(self) -> list[str]:
        return self.attributes.get("Parent", [])

    def get(self, tag: str, default: str | None = None) -> str | None:
        """First value of an attribute, or ``default``."""
        values = self.attributes.get(tag)
        return values[0] if values else default

    @property
    def trans_spliced(self) -> bool:
        return "trans-splicing" in self.attributes.get("exception", [])


def _parse_attributes(text: str, where: str) -> dict[str, list[str]]:
    attributes: dict[str, list[str]] = {}
    if text in ("", "."):
        return attributes
    for item in text.strip().strip(";").split(";"):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise InputDataError(f"{where}: attribute {item!r} is not tag=value")
        tag, value = item.split("=", 1)
        attributes[unquote(tag.strip())] = [unquote(v) for v in value.split(",")]
    return attributes


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a plain or gzip text file; bad bytes or a truncated gzip name file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    number = 0
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                yield number, raw.decode("utf-8")
    except FileNotFoundError:
        raise InputDataError(f"{path}: GFF3 file not found") from None
    except UnicodeDecodeError as err:
        raise InputDataError(
            f"{path}: line {number}, column {err.start + 1}: not UTF-8 text (byte 0x{err.object[err.start]:02x})"
        ) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise InputDataError(f"{path}: truncated or corrupt gzip after line {number}: {err}") from None


def _score(text: str, where: str) -> float | None:
    if text == ".":
        return None
    try:
        return float(text)
    except ValueError:
        raise InputDataError(f"{where}: score {text!r} is not a number or '.'") from None


def read_gff3(path: str | Path) -> list[Feature]:
    """Read the feature lines of a GFF3 file (plain or gzip). Stops at a ``##FASTA`` section.

    Raises :class:`~genolm.errors.InputDataError` naming the file and line for malformed lines (wrong column
    count, non-integer or inverted coordinates, an unknown strand), non-UTF-8 text and truncated gzip.
    """
    path = Path(path)
    features: list[Feature] = []
    for number, raw in _numbered_lines(path):
        line = raw.rstrip("\n\r")
        if line.startswith("##FASTA"):
            break
        if not line.strip() or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        columns = line.split("\t")
        if len(columns) != 9:
            raise InputDataError(f"{where}: expected 9 tab-separated columns, found {len(columns)}")
        seqid, source, kind, start, end, score, strand, phase, attributes = columns
        try:
            start_i, end_i = int(start), int(end)
        except ValueError:
            raise InputDataError(f"{where}: start/end {start!r}/{end!r} are not integers") from None
        if start_i < 1 or end_i < start_i:
            raise InputDataError(
                f"{where}: invalid interval {start_i}..{end_i} (GFF3 is 1-based, start <= end)"
            )
        if strand not in ("+", "-", ".", "?"):
            raise InputDataError(f"{where}: strand {strand!r} is not one of + - . ?")
        if phase not in (".", "0", "1", "2"):
            raise InputDataError(f"{where}: phase {phase!r} is not one of . 0 1 2")
        features.append(
            Feature(
                seqid=unquote(seqid),
                source=source,
                type=kind,
                start=start_i,
                end=end_i,
                score=_score(score, where),
                strand=strand,
                phase=None if phase == "." else int(phase),
                attributes=_parse_attributes(attributes, where),
                line=number,
            )
        )
    return features


@dataclass
class Transcript:
    """A transcript model (or a gene acting as one). Intervals are 1-based closed, sorted by start.

    ``exons`` are merged (touching segments joined); ``structure`` says whether they come from ``exon``
    or ``CDS`` lines. ``cds`` lists the CDS segments (empty for non-coding RNAs).
    """

    id: str
    gene_id: str
    seqid: str
    strand: str
    type: str
    start: int
    end: int
    exons: list[tuple[int, int]]
    cds: list[tuple[int, int]]
    structure: str
    trans_spliced: bool = False
    attributes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def five_prime(self) -> int:
        """1-based position of the transcript's first base (its TSS when UTRs are annotated)."""
        return self.start if self.strand == "+" else self.end

    def introns(self, min_length: int = MIN_INTRON_LENGTH) -> list[tuple[int, int]]:
        """Gaps between consecutive exons, 1-based closed; none for trans-spliced transcripts."""
        if self.trans_spliced:
            return []
        gaps = [(a[1] + 1, b[0] - 1) for a, b in zip(self.exons, self.exons[1:])]
        return [(s, e) for s, e in gaps if e - s + 1 >= min_length]


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class GFF3:
    """An annotation: features grouped by ``ID`` and by ``Parent``.

    Args:
        path: a GFF3 file (plain or ``.gz``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.features = read_gff3(self.path)
        self.by_id: dict[str, list[Feature]] = defaultdict(list)
        self.children: dict[str, list[Feature]] = defaultdict(list)
        for feature in self.features:
            if feature.id is not None:
                self.by_id[feature.id].append(feature)
            for parent in feature.parents:
                self.children[parent].append(feature)
        for parent, kids in self.children.items():
            if parent not in self.by_id:
                kid = kids[0]
                raise InputDataError(f"{self.path}:{kid.line}: Parent {parent!r} is not the ID of any feature")

    @property
    def seqids(self) -> list[str]:
        """Sequence ids in order of first appearance."""
        return list(dict.fromkeys(f.seqid for f in self.features))

    def _root(self, feature_id: str) -> str:
        """The top-most ancestor's ID (the gene), following the first Parent."""
        seen = {feature_id}
        current = feature_id
        while True:
            parents = self.by_id[current][0].parents
            if not parents:
                return current
            current = parents[0]
            if current in seen:
                raise InputDataError(f"{self.path}: Parent cycle through {current!r}")
            seen.add(current)

    def transcripts(self) -> list[Transcript]:
        """Every feature with ``exon`` or ``CDS`` children, as a :class:`Transcript` (file order)."""
        result = []
        for feature_id, lines in self.by_id.items():
            kids = self.children.get(feature_id, [])
            exons = [k for k in kids if k.type == "exon"]
            cds = [k for k in kids if k.type == "CDS"]
            if not exons and not cds:
                continue
            parts = exons or cds
            gene_id = self._root(feature_id)
            lines_and_parts = lines + parts + self.by_id[gene_id]
            strands = {f.strand for f in lines + parts}
            seqids = {f.seqid for f in lines + parts}
            trans_spliced = (
                any(f.trans_spliced for f in lines_and_parts) or len(strands) > 1 or len(seqids) > 1
            )
            first = lines[0]
            if first.strand not in ("+", "-") and not trans_spliced:
                raise InputDataError(f"{self.path}:{first.line}: transcript {feature_id!r} has no strand")
            result.append(
                Transcript(
                    id=feature_id,
                    gene_id=gene_id,
                    seqid=first.seqid,
                    strand=first.strand,
                    type=first.type,
                    start=min(f.start for f in lines + parts),
                    end=max(f.end for f in lines + parts),
                    exons=_merge([(p.start, p.end) for p in parts]),
                    cds=sorted((c.start, c.end) for c in cds),
                    structure="exon" if exons else "CDS",
                    trans_spliced=trans_spliced,
                    attributes=first.attributes,
                )
            )
        return result

    def genes(self) -> list[Feature]:
        """Top-level features other than sequence regions (genes, transposons, ...), one per line."""
        return [f for f in self.features if not f.parents and f.type not in SEQUENCE_REGION_TYPES]


__all__ = ["Feature", "GFF3", "MIN_INTRON_LENGTH", "Transcript", "read_gff3"]
