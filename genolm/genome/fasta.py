"""Reading FASTA: format sniffing and the validated streaming parser.

The streaming parser, :func:`iter_fasta_blocks`, reads a stream (plain, gzip, bgzip; local or remote through
fsspec) in large chunks and yields *blocks* ``(seq_id, start, bases)`` that tile every record in fixed-size
pieces (``[start, start + len(bases))``, 0-based half-open, ``start`` a multiple of ``block_size``).
:func:`iter_records` and :func:`read_records` give the same bases record by record. Random access through a
``.fai`` index is in :mod:`genolm.genome.index`, which validates what it fetches with the same byte table.

Bases keep their case (lower case marks soft-masked repeats). Letters are the IUPAC nucleotide codes
(``ACGTN`` plus ``RYSWKMBDHVU``) and ``X`` (hard mask), see :mod:`genolm.genome.bases`; anything else is an
error naming the file, line, column and character. So are a missing ``>`` header, an empty record, a
duplicate id, a header that is not UTF-8, binary data and a truncated or corrupt gzip stream. Windows line
endings and blank lines are accepted.
"""

from __future__ import annotations

import gzip
import io
import itertools
import logging
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import InputDataError
from .bases import AMBIGUOUS, LOWER, VALID, describe_byte

logger = logging.getLogger(__name__)

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".faa", ".ffn", ".frn", ".seq", ".mfa")
GZIP_SUFFIXES = (".gz", ".bgz", ".bgzf")
_READ_SIZE = 4 << 20
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_WHITESPACE = b" \t\r\n\v\f"


class GenomeDataError(InputDataError):
    """Bad genome input: the message names the file (or URL), the line or byte offset and the problem."""


# --- sniffing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FastaFormat:
    """How a file is stored: ``"plain"``, ``"gzip"`` or ``"bgzip"``."""

    compression: str


def sniff_format(head: bytes, name: str) -> FastaFormat:
    """Identify plain / gzip / bgzip from the first bytes of a file and reject binary or headerless input."""
    if head[:2] == b"\x1f\x8b":
        is_bgzf = len(head) >= 18 and head[3] & 4 and head[12:14] == b"BC"
        return FastaFormat("bgzip" if is_bgzf else "gzip")
    _check_text_start(head, name)
    return FastaFormat("plain")


def _check_text_start(head: bytes, name: str) -> None:
    """First bytes of decompressed text: must be text and start (after blank lines) with ``>``."""
    for offset, value in enumerate(head[:4096]):
        if value == 0 or (value < 32 and value not in b"\t\r\n\v\f"):
            raise GenomeDataError(f"{name}: binary data at byte offset {offset} (byte 0x{value:02x}); not a FASTA file")
    stripped = head.lstrip(_WHITESPACE)
    if stripped and stripped[:1] != b">":  # (only whitespace so far: the parser reports an empty file)
        line = head[: len(head) - len(stripped)].count(b"\n") + 1
        first = stripped.split(b"\n", 1)[0][:40].decode("ascii", "replace").rstrip()
        raise GenomeDataError(f"{name}: line {line}: missing '>' header: the file starts with {first!r}")


def is_fasta_name(name: str) -> bool:
    """Whether a file name has a FASTA suffix, optionally followed by a gzip suffix."""
    lower = name.lower()
    for suffix in GZIP_SUFFIXES:
        lower = lower.removesuffix(suffix)
    return lower.endswith(FASTA_SUFFIXES)


def check_bgzf_eof(path: str | Path) -> None:
    """Raise if a local BGZF file lacks its end-of-file marker (a truncated download or copy)."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        fh.seek(max(0, size - len(_BGZF_EOF)))
        tail = fh.read()
    if tail != _BGZF_EOF:
        raise GenomeDataError(
            f"{path}: truncated bgzip file: no BGZF end-of-file marker at byte offset {max(0, size - 28)} "
            f"(file is {size} bytes)"
        )


def open_local(path: str | Path) -> IO[bytes]:
    """Open a local file for binary reading; a missing or unreadable file is a :class:`GenomeDataError`."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise GenomeDataError(f"{path}: FASTA file not found") from None
    except IsADirectoryError:
        raise GenomeDataError(f"{path}: is a folder, not a FASTA file") from None
    except PermissionError:
        raise GenomeDataError(f"{path}: permission denied reading the FASTA file") from None


# --- streams -----------------------------------------------------------------------------------
def is_url(location: str) -> bool:
    return "://" in str(location)


class _Prepended(io.RawIOBase):
    """A readable stream that first returns ``head`` and then the rest of ``raw``."""

    def __init__(self, head: bytes, raw: IO[bytes]):
        self._head = head
        self._raw = raw
        self.consumed = 0  # compressed bytes handed out, for error messages

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
        else:
            data = self._raw.read(len(view))
            n = len(data)
            view[:n] = data
        self.consumed += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_raw(location: str) -> IO[bytes]:
    if not is_url(location):
        return open_local(location)
    from genolm.data.remote import open_url

    return open_url(location)


class FastaStream:
    """A decompressed binary stream of a FASTA file or URL; gzip/bgzip detected from the magic bytes."""

    def __init__(self, location: str | Path):
        self.name = str(location)
        self._raw = _open_raw(self.name)
        head = self._raw.read(64 << 10)
        self.compression = sniff_format(head, self.name).compression
        self._source = _Prepended(head, self._raw)
        if self.compression == "plain":
            self._stream: IO[bytes] = io.BufferedReader(self._source, buffer_size=_READ_SIZE)
        else:
            self._stream = gzip.GzipFile(fileobj=self._source, mode="rb")
        self._checked_start = self.compression == "plain"

    def read(self, size: int = _READ_SIZE) -> bytes:
        try:
            data = self._stream.read(size)
        except GenomeDataError:
            raise
        except EOFError as err:
            raise GenomeDataError(
                f"{self.name}: truncated gzip stream: compressed data ends at byte offset "
                f"{self._source.consumed} before the end-of-stream marker ({err})"
            ) from None
        except (zlib.error, gzip.BadGzipFile) as err:
            raise GenomeDataError(
                f"{self.name}: corrupt gzip data near compressed byte offset {self._source.consumed}: {err}"
            ) from None
        except Exception as err:  # I/O or network failure mid-stream (fsspec/aiohttp raise many types)
            raise GenomeDataError(
                f"{self.name}: read error after {self._source.consumed} bytes: {type(err).__name__}: {err}"
            ) from None
        if not self._checked_start and data:
            _check_text_start(data, self.name)
            self._checked_start = True
        return data

    def close(self) -> None:
        self._stream.close()
        self._source.close()

    def __enter__(self) -> FastaStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- streaming parser --------------------------------------------------------------------------
def iter_fasta_blocks(location: str | Path, block_size: int = 1 << 20) -> Iterator[tuple[str, int, bytes]]:
    """Parse a FASTA file or URL into validated blocks ``(seq_id, start, bases)``.

    Every record is cut into pieces of ``block_size`` bases at record offsets ``0, block_size, ...``
    (the last one shorter). ``bases`` keep their case and IUPAC letters. Raises
    :class:`GenomeDataError` for a missing ``>`` header, binary or truncated/corrupt gzip input, an
    empty header or sequence, a duplicate sequence id and any non-nucleotide character, naming the
    file and line.
    """
    name = str(location)
    seen: dict[str, int] = {}
    seq_id: str | None = None
    header_line = 0
    pending = bytearray()
    rec_pos = 0  # record offset of pending[0]
    line = 1  # line number of buf[0]
    buf = b""
    line_start = True  # whether buf[0] starts a line
    with FastaStream(location) as stream:
        eof = False
        while not eof:
            chunk = stream.read()
            eof = not chunk
            buf = buf + chunk if buf else chunk
            pos = 0
            n = len(buf)
            while pos < n:
                if buf[pos] == 0x3E and (buf[pos - 1] == 0x0A if pos else line_start):  # '>' starts a line
                    nl = buf.find(b"\n", pos)
                    if nl < 0 and not eof:
                        break
                    end = nl if nl >= 0 else n
                    if seq_id is not None:
                        if rec_pos + len(pending) == 0:
                            raise GenomeDataError(
                                f"{name}: line {header_line}: empty sequence for record {seq_id!r}"
                            )
                        if pending:
                            yield seq_id, rec_pos, bytes(pending)
                    header = buf[pos + 1 : end].strip()
                    if not header:
                        raise GenomeDataError(f"{name}: line {line}: empty FASTA header '>'")
                    seq_id = _decode_header(header, name, line)
                    if seq_id in seen:
                        raise GenomeDataError(
                            f"{name}: line {line}: duplicate sequence id {seq_id!r} "
                            f"(first defined at line {seen[seq_id]})"
                        )
                    seen[seq_id] = header_line = line
                    pending = bytearray()
                    rec_pos = 0
                    line += 1
                    pos = end + 1
                    continue
                # sequence lines up to the next header (keep the last byte back: "\n" + ">" may straddle)
                nxt = buf.find(b"\n>", pos)
                if nxt >= 0:
                    stop = nxt + 1
                elif eof:
                    stop = n
                else:
                    stop = n - 1
                    if stop <= pos:
                        break
                region = buf[pos:stop]
                bases = region.translate(None, _WHITESPACE)
                if bases:
                    if seq_id is None:
                        raise GenomeDataError(
                            f"{name}: line {line}: missing '>' header before the first sequence line"
                        )
                    _validate_region(bases, region, name, line)
                    pending += bases
                    while len(pending) >= block_size:
                        yield seq_id, rec_pos, bytes(pending[:block_size])
                        del pending[:block_size]
                        rec_pos += block_size
                line += region.count(b"\n")
                pos = stop
            if pos:
                line_start = buf[pos - 1] == 0x0A
            buf = buf[pos:]
    if seq_id is None:
        raise GenomeDataError(f"{name}: no FASTA records (empty file or no '>' header)")
    if rec_pos + len(pending) == 0:
        raise GenomeDataError(f"{name}: line {header_line}: empty sequence for record {seq_id!r}")
    if pending:
        yield seq_id, rec_pos, bytes(pending)


def iter_records(location: str | Path, block_size: int = 1 << 20) -> Iterator[tuple[str, Iterator[bytes]]]:
    """Stream a FASTA record by record: ``(seq_id, blocks)`` where ``blocks`` yields the record's validated
    bases in pieces of ``block_size`` (case kept). Consume ``blocks`` before advancing to the next record."""
    for seq_id, group in itertools.groupby(iter_fasta_blocks(location, block_size), key=lambda block: block[0]):
        yield seq_id, (bases for _, _, bases in group)


def read_records(location: str | Path, seq_ids: Iterable[str] | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(seq_id, sequence)`` for the records of a FASTA (validated, case kept), optionally only
    those in ``seq_ids`` (the others are read and skipped)."""
    wanted = None if seq_ids is None else set(seq_ids)
    for seq_id, blocks in iter_records(location, 1 << 24):
        if wanted is None or seq_id in wanted:
            yield seq_id, b"".join(blocks).decode("ascii")
        else:
            for _ in blocks:
                pass


def _decode_header(header: bytes, name: str, line: int) -> str:
    """The sequence id (first word) of a header line, which must be UTF-8 text."""
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as err:
        raise GenomeDataError(
            f"{name}: line {line}, column {err.start + 2}: header is not UTF-8 text (byte 0x{header[err.start]:02x})"
        ) from None
    return text.split()[0]


def _validate_region(bases: bytes, region: bytes, name: str, first_line: int) -> None:
    codes = np.frombuffer(bases, dtype=np.uint8)
    valid = VALID[codes]
    if valid.all():
        return
    bad = int(np.argmin(valid))
    # map the bad base back to its line and column in the raw text
    raw = np.frombuffer(region, dtype=np.uint8)
    not_space = np.ones(256, dtype=bool)
    not_space[list(_WHITESPACE)] = False
    raw_index = int(np.flatnonzero(not_space[raw])[bad])
    line = first_line + region.count(b"\n", 0, raw_index)
    column = raw_index - (region.rfind(b"\n", 0, raw_index) + 1) + 1
    raise GenomeDataError(f"{name}: line {line}, column {column}: {describe_byte(int(codes[bad]))} in sequence")


# --- statistics --------------------------------------------------------------------------------
@dataclass
class RecordStats:
    """Base counts of one FASTA record."""

    seq_id: str
    length: int = 0
    n: int = 0  # N (and n)
    ambiguous: int = 0  # IUPAC ambiguity codes and X (hard mask): read as N for tokenisation
    lowercase: int = 0  # soft-masked bases
    gc: int = 0


def fasta_stats(location: str | Path, block_size: int = 1 << 22) -> list[RecordStats]:
    """Per-record counts (length, N, IUPAC ambiguity codes, soft-masked and G/C bases) of a FASTA."""
    stats: dict[str, RecordStats] = {}
    is_n = np.zeros(256, dtype=bool)
    is_n[[ord("N"), ord("n")]] = True
    is_gc = np.zeros(256, dtype=bool)
    is_gc[list(b"GCgc")] = True
    for seq_id, _start, bases in iter_fasta_blocks(location, block_size):
        record = stats.setdefault(seq_id, RecordStats(seq_id))
        codes = np.frombuffer(bases, dtype=np.uint8)
        record.length += len(codes)
        record.n += int(np.count_nonzero(is_n[codes]))
        record.ambiguous += int(np.count_nonzero(AMBIGUOUS[codes]))
        record.lowercase += int(np.count_nonzero(LOWER[codes]))
        record.gc += int(np.count_nonzero(is_gc[codes]))
    for record in stats.values():
        if record.ambiguous:
            logger.info("%s: %s has %d IUPAC ambiguity codes (read as N)", location, record.seq_id, record.ambiguous)
    return list(stats.values())
