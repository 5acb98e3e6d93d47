"""Genomic regions: ``chr`` or ``chr:start-end`` (1-based closed, as in samtools), held 0-based half-open."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class Region:
    """A genomic interval, 0-based half-open (``end=None``: to the end of the sequence)."""

    seq_id: str
    start: int = 0
    end: int | None = None

    @classmethod
    def parse(cls, text: str, lengths: Mapping[str, int] | None = None) -> Region:
        """Parse ``chr`` (whole sequence) or ``chr:START-END`` (1-based closed as in samtools; commas allowed).

        With ``lengths`` (sequence id -> length), the sequence must exist and the region must lie inside it,
        and a whole-sequence region gets its end. A sequence id that itself contains ``:`` is read whole when
        ``lengths`` has it. Errors (:class:`~genolm.errors.UserError`) name the region and the sequence length.
        """
        if lengths is not None and text in lengths:
            return cls(text, 0, lengths[text])
        seq_id, sep, span = text.rpartition(":")
        if not sep:
            if not text:
                raise UserError("empty region: expected SEQ or SEQ:START-END (1-based, closed)")
            seq_id, first, last = text, None, None
        else:
            pieces = span.replace(",", "").split("-")
            if len(pieces) != 2 or not all(p.isdigit() for p in pieces) or not seq_id:
                raise UserError(
                    f"region {text!r}: expected SEQ:START-END with integer START and END (1-based, closed)"
                )
            first, last = int(pieces[0]), int(pieces[1])
            if first < 1 or last < first:
                raise UserError(f"region {text!r}: need 1 <= START <= END (1-based, closed)")
        if lengths is not None:
            if seq_id not in lengths:
                raise UserError(
                    f"region {text!r}: no sequence named {seq_id!r} (sequences: {_some(lengths)})"
                )
            if last is not None and last > lengths[seq_id]:
                raise UserError(
                    f"region {text!r}: END {last} is past the end of {seq_id} (length {lengths[seq_id]} bp)"
                )
        if first is None:
            return cls(seq_id, 0, None if lengths is None else lengths[seq_id])
        return cls(seq_id, first - 1, last)

    def contains(self, seq_id: str, start: int, end: int) -> bool:
        return seq_id == self.seq_id and start >= self.start and (self.end is None or end <= self.end)

    def overlaps(self, seq_id: str, start: int, end: int) -> bool:
        return seq_id == self.seq_id and end > self.start and (self.end is None or start < self.end)

    def __str__(self) -> str:
        return (
            self.seq_id
            if self.end is None and self.start == 0
            else f"{self.seq_id}:{self.start + 1}-{self.end}"
        )


def _some(lengths: Mapping[str, int], limit: int = 5) -> str:
    names = list(lengths)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def parse_region(text: str, lengths: Mapping[str, int] | None = None) -> tuple[str, int, int | None]:
    """``(seq_id, start, end)`` 0-based half-open of a region string (see :meth:`Region.parse`)."""
    region = Region.parse(text, lengths)
    return region.seq_id, region.start, region.end
