"""Reference sequences for inference: FASTA access, regions, strands and the k-mer token grid.

Coordinates are 0-based half-open throughout this module (Python slicing). Conversions from the 1-based
formats (VCF ``POS``, GFF3, ``chr:start-end`` regions) happen where those formats are read.

**The token grid.** A k-mer model sees a sequence through Nucleotide Transformer's tokenisation: the sequence
is cut at every non-ACGT character, each run of A/C/G/T is cut into k-mers from its first base, and the
bases left over at the end of a run (fewer than k) and every non-ACGT character are single-character tokens.
Where a window starts therefore fixes the phase of its k-mers. genolm takes the phase from the whole sequence:
the *grid* of a sequence (one strand of one FASTA record) is its tokenisation from the first base, and every
window genolm feeds to a model is a run of whole grid tokens. A window that starts on a token boundary is
tokenised alone exactly as the grid says, so a base belongs to the same k-mer in every window, whatever the
window size. :class:`TokenGrid` stores the grid as segments (runs of bases and of non-bases), so it is small
even for a long chromosome.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputDataError

__all__ = [
    "IS_BASE_BYTE",
    "Genome",
    "TokenGrid",
    "Window",
    "complement",
    "is_base",
    "iter_fasta_chunks",
    "parse_region",
    "reverse_complement",
]

# Byte -> whether NT's tokenizer reads it as a base (A/C/G/T/U, either case; U is read as T). Any other
# character is a single-character token and ends a run of bases.
IS_BASE_BYTE = np.zeros(256, dtype=bool)
IS_BASE_BYTE[list(b"ACGTUacgtu")] = True
_COMPLEMENT = str.maketrans("ACGTUNRYSWKMBDHVacgtunryswkmbdhv", "TGCAANYRSWMKVHDBtgcaanyrswmkvhdb")
_SCAN_CHUNK = 1 << 24  # bases per numpy pass when scanning a sequence for non-base runs


def complement(seq: str) -> str:
    """Complement of a nucleotide string (IUPAC codes included, case kept, other characters unchanged)."""
    return seq.translate(_COMPLEMENT)


def reverse_complement(seq: str) -> str:
    """Reverse complement of a nucleotide string."""
    return seq.translate(_COMPLEMENT)[::-1]


def is_base(char: str) -> bool:
    """Whether one character is an unambiguous base (A/C/G/T, either case): a valid SNV allele."""
    return len(char) == 1 and char in "ACGTacgt"


def _nonbase_runs(seq: str) -> tuple[np.ndarray, np.ndarray]:
    """Runs of characters that are not bases, as (starts, ends) int64 arrays, 0-based half-open."""
    starts, ends = [], []
    for offset in range(0, len(seq), _SCAN_CHUNK):
        chunk = seq[offset : offset + _SCAN_CHUNK].encode("ascii", errors="replace")
        nonbase = ~IS_BASE_BYTE[np.frombuffer(chunk, dtype=np.uint8)]
        edges = np.diff(np.concatenate(([0], nonbase.view(np.int8), [0])))
        starts.append(np.flatnonzero(edges == 1) + offset)
        ends.append(np.flatnonzero(edges == -1) + offset)
    return _merge_runs(starts, ends)


def _merge_runs(starts: list[np.ndarray], ends: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-chunk runs, joining runs that a chunk boundary split in two."""
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts_all = np.concatenate(starts).astype(np.int64)
    ends_all = np.concatenate(ends).astype(np.int64)
    if starts_all.size > 1:
        joined = np.zeros(starts_all.size, dtype=bool)
        joined[1:] = starts_all[1:] == ends_all[:-1]  # run i continues run i - 1
        starts_all = starts_all[~joined]
        ends_all = ends_all[~np.concatenate((joined[1:], [False]))]
    return starts_all, ends_all


@dataclass(frozen=True, order=True)
class Window:
    """A window of whole grid tokens, on one strand of one sequence.

    Attributes:
        first_token, last_token: grid token indices, half-open ``[first_token, last_token)``.
        start, end: its bases on the strand's own coordinates, 0-based half-open.
    """

    first_token: int
    last_token: int
    start: int
    end: int

    @property
    def n_tokens(self) -> int:
        return self.last_token - self.first_token


class TokenGrid:
    """NT tokenisation of one whole sequence (one strand), stored as token boundaries only (no ids).

    The sequence is a chain of segments: runs of bases (cut into ``len // k`` k-mers, then ``len % k``
    single bases) and runs of non-bases (one token each). Memory is proportional to the number of segments.

    Args:
        length: sequence length in bases.
        gap_starts, gap_ends: runs of non-base characters, 0-based half-open, sorted and disjoint.
        k: k-mer size of the tokenizer.
    """

    def __init__(self, length: int, gap_starts: np.ndarray, gap_ends: np.ndarray, k: int):
        self.length = int(length)
        self.k = int(k)
        self.gap_starts = np.asarray(gap_starts, dtype=np.int64)
        self.gap_ends = np.asarray(gap_ends, dtype=np.int64)
        bounds = np.concatenate(
            ([0], np.stack([self.gap_starts, self.gap_ends], axis=1).ravel(), [self.length])
        )
        seg_start, seg_end = bounds[:-1], bounds[1:]
        is_gap = np.zeros(seg_start.size, dtype=bool)
        is_gap[1::2] = True
        keep = seg_end > seg_start
        self.seg_start, self.seg_end, self.seg_is_gap = seg_start[keep], seg_end[keep], is_gap[keep]
        seg_len = self.seg_end - self.seg_start
        # k-mers per segment (0 for gaps) and tokens per segment.
        self.seg_kmers = np.where(self.seg_is_gap, 0, seg_len // self.k)
        seg_tokens = np.where(self.seg_is_gap, seg_len, self.seg_kmers + seg_len % self.k)
        self.seg_first_token = np.concatenate(([0], np.cumsum(seg_tokens)))
        self.n_tokens = int(self.seg_first_token[-1])

    @classmethod
    def from_sequence(cls, seq: str, k: int) -> TokenGrid:
        """Grid of ``seq`` (any case; runs of non-A/C/G/T characters become single tokens)."""
        starts, ends = _nonbase_runs(seq)
        return cls(len(seq), starts, ends, k)

    def reverse(self) -> TokenGrid:
        """Grid of the reverse-complement strand: gaps mirrored, tokenised from the other end."""
        return TokenGrid(
            self.length, (self.length - self.gap_ends)[::-1], (self.length - self.gap_starts)[::-1], self.k
        )

    def token_of(self, pos: int | np.ndarray) -> np.ndarray | int:
        """Grid token index holding base ``pos`` (0-based; scalar or array)."""
        pos_arr = np.asarray(pos, dtype=np.int64)
        if pos_arr.size and (pos_arr.min() < 0 or pos_arr.max() >= self.length):
            raise IndexError(f"position outside the sequence (length {self.length})")
        seg = np.searchsorted(self.seg_start, pos_arr, side="right") - 1
        offset = pos_arr - self.seg_start[seg]
        in_kmers = self.seg_kmers[seg] * self.k
        # In a run of bases: k-mers first, then single leftover bases. A gap (no k-mers) is all single tokens.
        within = np.where(offset < in_kmers, offset // self.k, self.seg_kmers[seg] + offset - in_kmers)
        token = self.seg_first_token[seg] + within
        return int(token) if np.ndim(pos) == 0 else token

    def token_span(self, token: int | np.ndarray) -> tuple:
        """Bases ``(start, end)`` of grid token(s), 0-based half-open (scalars or arrays)."""
        tok = np.asarray(token, dtype=np.int64)
        if tok.size and (tok.min() < 0 or tok.max() >= self.n_tokens):
            raise IndexError(f"token index outside the grid ({self.n_tokens} tokens)")
        seg = np.searchsorted(self.seg_first_token, tok, side="right") - 1
        j = tok - self.seg_first_token[seg]
        kmers = self.seg_kmers[seg]
        start = self.seg_start[seg] + np.where(j < kmers, j * self.k, kmers * self.k + (j - kmers))
        end = start + np.where(j < kmers, self.k, 1)
        if np.ndim(token) == 0:
            return int(start), int(end)
        return start, end

    def window(self, token: int, n_tokens: int) -> Window:
        """The window of ``n_tokens`` grid tokens with ``token`` in its middle (index ``n_tokens // 2``),
        shifted inwards where it would pass a sequence end (it is shorter only if the sequence is)."""
        first = token - n_tokens // 2
        first = max(0, min(first, self.n_tokens - n_tokens))
        last = min(self.n_tokens, first + n_tokens)
        return Window(first, last, self.token_span(first)[0], self.token_span(last - 1)[1])

    def tiling(self, n_tokens: int, stride: int) -> list[Window]:
        """Windows of ``n_tokens`` tokens every ``stride`` tokens covering the whole grid; the last one is
        shifted to end at the last token."""
        if self.n_tokens == 0:
            return []
        firsts = list(range(0, max(self.n_tokens - n_tokens, 0) + 1, stride))
        if firsts[-1] + n_tokens < self.n_tokens:
            firsts.append(self.n_tokens - n_tokens)
        windows = []
        for first in firsts:
            last = min(self.n_tokens, first + n_tokens)
            windows.append(Window(first, last, self.token_span(first)[0], self.token_span(last - 1)[1]))
        return windows


class Genome:
    """Random access to the records of a FASTA file, with one token grid per record and strand.

    Plain and bgzip-compressed FASTA with a samtools index (``.fai``, plus ``.gzi`` for bgzip) are read with
    ``pysam.FastaFile``; pysam builds a missing index where it can write. Anything else (plain gzip, a
    read-only folder without index) is read into memory once.

    Args:
        path: FASTA file (``.fa``, ``.fa.gz``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise InputDataError(f"{self.path}: FASTA file not found")
        self._fasta = None
        self._records: dict[str, str] | None = None
        import pysam

        previous = pysam.set_verbosity(0)  # htslib logs its own errors for files it cannot index
        try:
            self._fasta = pysam.FastaFile(str(self.path))
            self.lengths = dict(zip(self._fasta.references, self._fasta.lengths))
        except (OSError, ValueError):
            self._records = {}
            for name, chunks in iter_fasta_chunks(self.path):
                self._records[name] = "".join(chunks)
            self.lengths = {name: len(seq) for name, seq in self._records.items()}
        finally:
            pysam.set_verbosity(previous)
        self._grids: dict[tuple[str, int, str], TokenGrid] = {}

    @property
    def names(self) -> list[str]:
        return list(self.lengths)

    def __contains__(self, name: str) -> bool:
        return name in self.lengths

    def fetch(self, name: str, start: int, end: int, strand: str = "+") -> str:
        """Bases ``[start, end)`` of record ``name`` on the forward strand's coordinates, as stored (case kept);
        ``strand="-"`` returns their reverse complement."""
        if name not in self.lengths:
            raise KeyError(f"{self.path}: no sequence named {name!r}")
        if self._fasta is not None:
            seq = self._fasta.fetch(name, start, end)
        else:
            seq = self._records[name][start:end]
        return reverse_complement(seq) if strand == "-" else seq

    def fetch_strand(self, name: str, start: int, end: int, strand: str) -> str:
        """Bases ``[start, end)`` in the *strand's own* coordinates (on ``-``, position 0 is the last base of
        the forward strand)."""
        if strand == "+":
            return self.fetch(name, start, end)
        length = self.lengths[name]
        return self.fetch(name, length - end, length - start, "-")

    def grid(self, name: str, k: int, strand: str = "+") -> TokenGrid:
        """Token grid of one strand of record ``name`` (cached). Builds the forward grid by scanning the record
        once."""
        key = (name, k, strand)
        if key not in self._grids:
            if strand == "-":
                self._grids[key] = self.grid(name, k, "+").reverse()
            else:
                length = self.lengths[name]
                starts, ends = [], []
                for offset in range(0, length, _SCAN_CHUNK):
                    s, e = _nonbase_runs(self.fetch(name, offset, min(length, offset + _SCAN_CHUNK)))
                    starts.append(s + offset)
                    ends.append(e + offset)
                self._grids[key] = TokenGrid(length, *_merge_runs(starts, ends), k)
        return self._grids[key]

    def close(self) -> None:
        if self._fasta is not None:
            self._fasta.close()

    def __enter__(self) -> Genome:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_text(path: str | os.PathLike):
    path = Path(path)
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"\x1f\x8b":  # gzip, including bgzip (multi-member gzip)
        return gzip.open(path, "rt")
    return open(path)


def iter_fasta_chunks(
    path: str | os.PathLike, chunk_bases: int = 1 << 20
) -> Iterator[tuple[str, Iterator[str]]]:
    """Stream a FASTA file (plain, gzip or bgzip) record by record in bounded memory.

    Yields ``(name, chunks)`` per record, where ``chunks`` yields the record's sequence in pieces of about
    ``chunk_bases`` characters (line breaks removed, case kept). Consume ``chunks`` before advancing to the next
    record. ``name`` is the header up to the first whitespace.
    """
    handle = _open_text(path)
    state = {"line": None, "lineno": 0}

    def next_line() -> str | None:
        line = handle.readline()
        state["lineno"] += 1
        return line if line else None

    def record_chunks() -> Iterator[str]:
        buffer, size = [], 0
        while True:
            line = next_line()
            if line is None or line.startswith(">"):
                state["line"] = line
                break
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            buffer.append(line)
            size += len(line)
            if size >= chunk_bases:
                yield "".join(buffer)
                buffer, size = [], 0
        if buffer:
            yield "".join(buffer)

    try:
        line = next_line()
        while line is not None and not line.startswith(">"):
            if line.strip():
                raise InputDataError(f"{path}:{state['lineno']}: expected a FASTA header line starting with '>'")
            line = next_line()
        while line is not None:
            name = line[1:].split(maxsplit=1)[0] if line[1:].strip() else ""
            if not name:
                raise InputDataError(f"{path}:{state['lineno']}: FASTA header without a name")
            chunks = record_chunks()
            yield name, chunks
            for _ in chunks:  # the caller may have stopped early: skip the rest of the record
                pass
            line = state["line"]
    finally:
        handle.close()


def parse_region(region: str, genome: Genome | None = None) -> tuple[str, int, int]:
    """Parse ``name:start-end`` (1-based, closed, as in samtools; commas allowed) or ``name`` (whole record).

    Returns ``(name, start, end)`` 0-based half-open: ``start = START - 1``, ``end = END``.
    """
    name, sep, span = region.rpartition(":")
    if not sep or (genome is not None and region in genome):
        if genome is None:
            raise ConfigError(f"region {region!r}: expected NAME:START-END (1-based, closed)")
        if region not in genome:
            raise ConfigError(f"region {region!r}: no such sequence in {genome.path}")
        return region, 0, genome.lengths[region]
    try:
        first, last = (int(x.replace(",", "").replace("_", "")) for x in span.split("-"))
    except ValueError:
        raise ConfigError(f"region {region!r}: expected NAME:START-END with integer START and END") from None
    if first < 1 or last < first:
        raise ConfigError(f"region {region!r}: need 1 <= START <= END (1-based, closed)")
    if genome is not None:
        if name not in genome:
            raise ConfigError(f"region {region!r}: no sequence named {name!r} in {genome.path}")
        if last > genome.lengths[name]:
            raise ConfigError(f"region {region!r}: END is past the end of {name} ({genome.lengths[name]} bp)")
    return name, first - 1, last
