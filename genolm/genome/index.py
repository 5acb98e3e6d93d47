"""Indexed FASTA access: ``.fai``/``.gzi`` indexes checked against their FASTA, and random access via pysam.

An index is trusted only when it is consistent with its FASTA (:func:`index_problem`): not older than the
FASTA, and its record offsets and lengths fit the file (for plain FASTA, each record's header line precedes
its offset). A stale index is rebuilt with ``pysam.faidx`` when its folder is writable, and refused otherwise
(:func:`find_index`): it is never used stale.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bases import VALID, describe_byte
from .fasta import GenomeDataError, check_bgzf_eof, is_url, iter_fasta_blocks, open_local, sniff_format

logger = logging.getLogger(__name__)

_HEADER_LOOKBACK = 1024  # bytes read before a record's offset to find its header line
_TRAILING_SLACK = 1024  # bytes (blank lines) allowed after the last indexed base of a bgzip FASTA


@dataclass(frozen=True)
class FaiRecord:
    """One line of a samtools ``.fai`` index."""

    name: str
    length: int
    offset: int
    line_bases: int
    line_width: int

    @property
    def end_offset(self) -> int:
        """Byte offset just past the record's last base (uncompressed)."""
        last = self.length - 1
        return self.offset + (last // self.line_bases) * self.line_width + last % self.line_bases + 1


def read_fai(path: str | Path) -> list[FaiRecord]:
    """Parse a ``.fai`` index, rejecting malformed lines and duplicate sequence ids."""
    records: list[FaiRecord] = []
    seen: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            lines = list(fh)
    except UnicodeDecodeError as err:
        raise GenomeDataError(f"{path}: FASTA index is not UTF-8 text (byte offset {err.start})") from None
    for number, text in enumerate(lines, start=1):
        fields = text.rstrip("\r\n").split("\t")
        if len(fields) < 5:
            raise GenomeDataError(
                f"{path}: line {number}: expected 5 tab-separated fields, got {len(fields)}"
            )
        try:
            length, offset, line_bases, line_width = (int(v) for v in fields[1:5])
        except ValueError:
            raise GenomeDataError(f"{path}: line {number}: non-integer field in {text.strip()!r}") from None
        if fields[0] in seen:
            raise GenomeDataError(
                f"{path}: line {number}: duplicate sequence id {fields[0]!r} (first at line {seen[fields[0]]})"
            )
        if length == 0:
            raise GenomeDataError(f"{path}: line {number}: empty sequence for record {fields[0]!r}")
        if line_bases <= 0 or line_width < line_bases or offset < 0:
            raise GenomeDataError(f"{path}: line {number}: invalid line geometry in {text.strip()!r}")
        seen[fields[0]] = number
        records.append(FaiRecord(fields[0], length, offset, line_bases, line_width))
    if not records:
        raise GenomeDataError(f"{path}: empty FASTA index")
    return records


def _read_gzi(path: Path) -> list[tuple[int, int]]:
    """``(compressed, uncompressed)`` offsets of a bgzip ``.gzi`` index."""
    data = path.read_bytes()
    if len(data) < 8:
        raise GenomeDataError(f"{path}: truncated .gzi index ({len(data)} bytes)")
    (count,) = struct.unpack_from("<Q", data)
    if len(data) != 8 + 16 * count:
        raise GenomeDataError(f"{path}: .gzi index holds {len(data)} bytes, expected {8 + 16 * count}")
    pairs = np.frombuffer(data, dtype="<u8", offset=8).reshape(-1, 2)
    return [(int(c), int(u)) for c, u in pairs]


def index_problem(path: str | Path, fai: str | Path, gzi: str | Path | None = None) -> str | None:
    """Why the index ``fai`` (and ``gzi``) does not describe the FASTA ``path``, or ``None`` if it does."""
    path, fai = Path(path), Path(fai)
    fasta_mtime = path.stat().st_mtime_ns
    for index in (fai, gzi):
        if index is not None and Path(index).stat().st_mtime_ns < fasta_mtime:
            return f"{path} was modified after its index {index} was written"
    try:
        records = read_fai(fai)
    except GenomeDataError as err:
        return str(err)
    size = path.stat().st_size
    if gzi is not None:
        blocks = _read_gzi(Path(gzi))
        if blocks and blocks[-1][0] >= size:
            return f"{gzi} points at compressed byte {blocks[-1][0]}, past the end of {path} ({size} bytes)"
        if blocks and records[-1].end_offset + _TRAILING_SLACK < blocks[-1][1]:
            return f"{fai} ends at uncompressed byte {records[-1].end_offset}, before the last bgzip block in {gzi}"
        return None
    previous_end = 0
    with open_local(path) as fh:
        for record in records:
            if record.offset < previous_end or record.end_offset > size:
                return (
                    f"{fai} places {record.name!r} at bytes {record.offset}-{record.end_offset}, which does not fit "
                    f"{path} ({size} bytes)"
                )
            previous_end = record.end_offset
            start = max(0, record.offset - _HEADER_LOOKBACK)
            fh.seek(start)
            before = fh.read(record.offset - start + 1)
            if not before.endswith(b"\n", 0, len(before) - 1) or not VALID[before[-1]]:
                return f"{fai}: no sequence line of {record.name!r} at byte offset {record.offset} of {path}"
            line_start = before.rfind(b"\n", 0, len(before) - 2) + 1
            if line_start or start == 0:
                header = before[line_start:-2].split()
                if not header or header[0] != b">" + record.name.encode():
                    return f"{fai}: the line before byte offset {record.offset} of {path} is not the header of {record.name!r}"
        fh.seek(previous_end)
        if fh.read(4096).strip():
            return f"{path} has data after byte offset {previous_end}, where {fai} ends"
    return None


def _folder_writable(*paths: Path) -> bool:
    """Whether the index files ``paths`` (in one folder) can be written or replaced."""
    return os.access(paths[0].parent, os.W_OK) and all(not p.exists() or os.access(p, os.W_OK) for p in paths)


def build_index(path: str | Path) -> tuple[Path, Path | None]:
    """Validate the whole FASTA (as the streaming reader does), then write ``path.fai`` (and ``path.gzi`` for
    bgzip) with ``pysam.faidx``; returns their paths."""
    import pysam

    path = Path(path)
    for _ in iter_fasta_blocks(path, 1 << 24):
        pass
    try:
        pysam.faidx(str(path))
    except pysam.SamtoolsError as err:
        raise GenomeDataError(f"{path}: cannot index the FASTA file: {' '.join(str(err).split())}") from None
    gzi = Path(f"{path}.gzi")
    return Path(f"{path}.fai"), gzi if gzi.exists() else None


def find_index(path: str | Path, build: bool = False) -> tuple[Path, Path | None] | None:
    """The trusted ``(.fai, .gzi)`` pair of a local FASTA, or ``None`` where it is read by streaming.

    A stale or inconsistent index (see :func:`index_problem`) is rebuilt when its folder is writable and
    refused with a :class:`GenomeDataError` naming both files otherwise. With ``build``, a missing index is
    written where the folder is writable. Plain gzip (not bgzip) cannot be indexed: ``None``.
    """
    path = Path(path)
    with open_local(path) as fh:
        head = fh.read(64)
    if not head:
        raise GenomeDataError(f"{path}: empty file")
    compression = sniff_format(head, str(path)).compression
    if compression == "gzip":
        return None
    if compression == "bgzip":
        check_bgzf_eof(path)
    fai, gzi = Path(f"{path}.fai"), Path(f"{path}.gzi") if compression == "bgzip" else None
    if not fai.exists() or (gzi is not None and not gzi.exists()):
        if build and _folder_writable(fai, *([gzi] if gzi else [])):
            return build_index(path)
        return None
    problem = index_problem(path, fai, gzi)
    if problem is None:
        return fai, gzi
    if not _folder_writable(fai, *([gzi] if gzi else [])):
        raise GenomeDataError(
            f"{path}: stale index {fai}{f' / {gzi}' if gzi else ''} ({problem}) and the folder is not writable; "
            f"re-index with `samtools faidx {path}`"
        )
    logger.warning("%s: rebuilding its stale index %s (%s)", path, fai, problem)
    return build_index(path)


class IndexedFasta:
    """Random access to a local FASTA through its ``.fai`` (+ ``.gzi``) index, via :class:`pysam.FastaFile`.

    Takes the index as found by :func:`find_index` (trusted). The pysam handle is opened lazily, so
    instances can be pickled into dataloader workers.
    """

    def __init__(self, path: str | Path, fai: str | Path | None = None, gzi: str | Path | None = None):
        self.path = str(path)
        self.fai = str(fai or f"{path}.fai")
        self.gzi = str(gzi) if gzi else None
        self.records = read_fai(self.fai)
        self._by_name = {r.name: i for i, r in enumerate(self.records)}
        self._handle = None

    @classmethod
    def open(cls, path: str | Path, build: bool = True) -> IndexedFasta | None:
        """The indexed reader of ``path`` with a trusted index (built if missing and ``build``), or ``None``."""
        index = find_index(path, build=build)
        return None if index is None else cls(path, *index)

    @property
    def lengths(self) -> dict[str, int]:
        return {r.name: r.length for r in self.records}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    @property
    def handle(self):
        if self._handle is None:
            import pysam

            kwargs = {"filepath_index": self.fai}
            if self.gzi:
                kwargs["filepath_index_compressed"] = self.gzi
            self._handle = pysam.FastaFile(self.path, **kwargs)
        return self._handle

    def fetch(self, seq_id: str, start: int, end: int) -> bytes:
        """Bases ``[start, end)`` of ``seq_id`` (case kept), validated."""
        index = self._by_name.get(seq_id)
        if index is None:
            raise GenomeDataError(f"{self.path}: no sequence {seq_id!r} in the index {self.fai}")
        record = self.records[index]
        if not 0 <= start <= end <= record.length:
            raise GenomeDataError(
                f"{self.path}: region {seq_id}:{start}-{end} outside the sequence (length {record.length})"
            )
        try:
            bases = self.handle.fetch(seq_id, start, end).encode("ascii", "replace")
        except (OSError, ValueError) as err:
            raise GenomeDataError(f"{self.path}: cannot read {seq_id}:{start}-{end}: {err}") from None
        if len(bases) != end - start:
            raise GenomeDataError(
                f"{self.path}: read {len(bases)} bases for {seq_id}:{start}-{end} instead of {end - start} "
                "(truncated file or stale .fai index?)"
            )
        codes = np.frombuffer(bases, dtype=np.uint8)
        valid = VALID[codes]
        if not valid.all():
            bad = int(np.argmin(valid))
            line, column = self.line_of(index, start + bad)
            raise GenomeDataError(
                f"{self.path}: line {line}, column {column}: {describe_byte(int(codes[bad]))} in sequence "
                f"{seq_id!r} (position {start + bad})"
            )
        return bases

    def line_of(self, index: int, position: int) -> tuple[int, int]:
        """1-based (line, column) of a 0-based position of record ``index`` (from the index geometry)."""
        line = 0
        for record in self.records[:index]:
            line += 1 + -(-record.length // record.line_bases)
        record = self.records[index]
        return line + 2 + position // record.line_bases, position % record.line_bases + 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def sequence_lengths(path: str | Path) -> dict[str, int]:
    """Record lengths of a FASTA: from its trusted index when it has one, else by streaming the file."""
    index = find_index(path) if not is_url(str(path)) else None
    if index is not None:
        return {record.name: record.length for record in read_fai(index[0])}
    lengths: dict[str, int] = {}
    for seq_id, _start, bases in iter_fasta_blocks(path, 1 << 24):
        lengths[seq_id] = lengths.get(seq_id, 0) + len(bases)
    return lengths
