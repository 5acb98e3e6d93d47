"""A reference genome with random access to its records (``fetch`` by region, either strand)."""

from __future__ import annotations

import os
from pathlib import Path

from .bases import reverse_complement
from .fasta import GenomeDataError, read_records
from .index import IndexedFasta


class Reference:
    """Random access to the records of a local FASTA file (plain, gzip or bgzip), validated.

    A plain or bgzip FASTA is read through its ``.fai`` (+ ``.gzi``) index with pysam: a missing index is
    built where the folder is writable, a stale one is rebuilt there or refused (see
    :func:`genolm.genome.index.find_index`). Anything else (plain gzip, a read-only folder without index)
    is read into memory once by the streaming reader. Either way the bases are validated.

    Args:
        path: FASTA file (``.fa``, ``.fa.gz``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._indexed = IndexedFasta.open(self.path, build=True)
        self._records: dict[str, str] | None = None
        if self._indexed is not None:
            self.lengths = self._indexed.lengths
        else:
            self._records = dict(read_records(self.path))
            self.lengths = {name: len(seq) for name, seq in self._records.items()}

    @property
    def names(self) -> list[str]:
        return list(self.lengths)

    def __contains__(self, name: str) -> bool:
        return name in self.lengths

    def fetch(self, name: str, start: int, end: int, strand: str = "+") -> str:
        """Bases ``[start, end)`` of record ``name`` on the forward strand's coordinates, as stored (case kept);
        ``strand="-"`` returns their reverse complement."""
        if name not in self.lengths:
            raise GenomeDataError(f"{self.path}: no sequence named {name!r}")
        if not 0 <= start <= end <= self.lengths[name]:
            raise GenomeDataError(
                f"{self.path}: region {name}:{start + 1}-{end} outside the sequence (length {self.lengths[name]})"
            )
        if self._indexed is not None:
            seq = self._indexed.fetch(name, start, end).decode("ascii")
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

    def close(self) -> None:
        if self._indexed is not None:
            self._indexed.close()

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
