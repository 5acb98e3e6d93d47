"""Variants beyond SNVs for ``genolm vep``: indels, MNVs and symbolic structural variants, and the REF/ALT
haplotype windows their pseudo-log-likelihood score is computed on.

Coordinates are 0-based half-open on the forward strand (``pos = VCF POS - 1``).

**Variant kinds** (:attr:`Variant.kind`): ``snv`` (one base to one base), ``mnv`` (REF and ALT of the same
length > 1), ``indel`` (REF and ALT of different lengths), and the symbolic ALTs whose alleles can be built
from the reference: ``DEL`` (``<DEL>``, ``<DEL:...>``: the bases after ``POS`` up to ``END`` are deleted),
``INS`` (``<INS>``, ``<INS:...>`` with its bases in INFO ``SVINSSEQ``, inserted after ``POS``), ``DUP``
(``<DUP>``, ``<DUP:TANDEM>``: the bases after ``POS`` up to ``END`` repeated in tandem) and ``INV`` (``<INV>``:
those bases reverse-complemented). ``END`` comes from INFO ``END``, or else ``POS + |SVLEN|``. Anything else
(``<CNV>``, an ``<INS>`` without sequence, a breakend, a ``<DEL>`` without END or SVLEN) is ``unresolved``;
``*`` is ``spanning_deletion``.

**Edit.** Every variant is reduced to one :class:`Edit`: the reference bases ``[start, end)`` replaced by
``alt``. The alleles are trimmed of their common suffix, then of their common prefix (so ``TTCG -> T`` deletes
``TCG``), and a pure insertion or deletion is then shifted left as far as the sequence allows (left-aligned, as
``bcftools norm`` does). The same change written in any of its VCF forms (explicit REF/ALT, symbolic, another
position in a repeat) gives the same edit, hence the same score.

**Haplotype windows.** Around the edit, both haplotypes are three pieces of one strand, each tokenised alone
(Nucleotide Transformer's rules: k-mers from the piece's first base, then single bases):

* the *left flank*: reference bases ending where the edit starts, cut into whole k-mers counted back from
  the edit (so its k-mers end exactly at the edit; the phase of the record's own token grid plays no part);
* the *middle*: the changed bases, ``ref[start:end]`` on the REF haplotype and ``alt`` on the ALT haplotype
  (k-mers, then single bases for the remainder);
* the *right flank*: reference bases from the end of the edit, k-mers from its first base.

The flanks are the same tokens on both haplotypes; only the middle differs. With ``M`` the longer middle (in
tokens) and ``W`` the window size in tokens, the left flank takes ``(W - M) // 2`` tokens and the right flank
the rest, ``W - M - left`` (a flank that reaches a sequence end gives its unused tokens to the other side), so
the longer haplotype's window has exactly ``W`` tokens and the other one ``W - |difference of the middles|``.
A variant that changes more than ``(W // 2) * k`` bases on either haplotype (half a window) is ``too_long``,
and so is one whose middle leaves less than one flank token each side (windows of fewer than ``2 k + 2``
tokens). On the reverse-complement strand the
same construction runs on the reverse complement (the left flank is then the reverse complement of the bases
after the edit).

**Score.** ``PLL(haplotype)`` is the sum, over the middle's tokens plus the flank token on each side of it,
of ``log P(token | window with that token masked)``: one masked forward pass per token.
``GENOLM_LLR = PLL(ALT window) - PLL(REF window)``. Because the windows depend only on the two haplotypes, the
score of a deletion on a genome is exactly minus the score of the matching insertion on the genome that carries
the deletion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..genome import is_base, reverse_complement
from .genome import Genome

__all__ = [
    "SYMBOLIC_KINDS",
    "Edit",
    "HaplotypeWindows",
    "Variant",
    "check",
    "haplotype_windows",
    "resolve",
]

SYMBOLIC_KINDS = ("DEL", "INS", "DUP", "INV")
_SYMBOLIC = {"DEL": "DEL", "INS": "INS", "DUP": "DUP", "DUP:TANDEM": "DUP", "INV": "INV"}


def _symbolic_kind(alt: str) -> str:
    """``DEL``/``INS``/``DUP``/``INV`` for a symbolic ALT genolm can build, else ``unresolved``."""
    name = alt[1:-1].upper()
    if name in _SYMBOLIC:
        return _SYMBOLIC[name]
    if name.startswith(("DEL:", "INS:")):  # subtypes, e.g. <DEL:ME:ALU>, <INS:ME:LINE1>
        return name[:3]
    return "unresolved"


@dataclass(frozen=True)
class Variant:
    """One ALT allele of a VCF record.

    Attributes:
        chrom: the FASTA record.
        pos: 0-based position of REF's first base (VCF ``POS - 1``; for a symbolic ALT, the padding base).
        ref, alt: the alleles as in the VCF (``alt`` may be ``<DEL>``, ``*``, ``.``...).
        kind: ``snv``, ``mnv``, ``indel``, ``DEL``, ``INS``, ``DUP``, ``INV``, ``spanning_deletion``, ``no_alt``
            or ``unresolved`` (see the module docstring).
        end: 0-based exclusive end of the reference bases the variant spans (``pos + len(ref)`` for sequence
            alleles; INFO ``END`` for a symbolic one).
        inserted: the bases an ``<INS>`` inserts (INFO ``SVINSSEQ``).
    """

    chrom: str
    pos: int
    ref: str
    alt: str
    kind: str
    end: int
    inserted: str = ""

    @classmethod
    def from_alleles(
        cls,
        chrom: str,
        pos: int,
        ref: str,
        alt: str,
        *,
        end: int | None = None,
        svlen: int | None = None,
        inserted: str | None = None,
    ) -> Variant:
        """Classify one ALT allele. ``end`` (0-based exclusive, i.e. the VCF ``END``), ``svlen`` and ``inserted``
        (``SVINSSEQ``) are read for symbolic ALTs only."""
        span = pos + len(ref)
        if alt in ("", "."):
            return cls(chrom, pos, ref, alt, "no_alt", span)
        if alt == "*":
            return cls(chrom, pos, ref, alt, "spanning_deletion", span)
        if alt.startswith("<") and alt.endswith(">"):
            kind = _symbolic_kind(alt)
            if kind == "INS":
                if not inserted or inserted == ".":
                    return cls(chrom, pos, ref, alt, "unresolved", span)
                return cls(chrom, pos, ref, alt, kind, span, inserted)
            if kind in ("DEL", "DUP", "INV"):
                if end is None or end < pos + 2:  # no base after the padding base: take SVLEN
                    size = _integer(svlen)
                    end = pos + 1 + abs(size) if size else None
                if end is None or end < pos + 2:
                    return cls(chrom, pos, ref, alt, "unresolved", span)
                return cls(chrom, pos, ref, alt, kind, int(end))
            return cls(chrom, pos, ref, alt, "unresolved", span)
        if any(c in alt for c in "[]<>") or alt.startswith(".") or alt.endswith("."):  # breakends
            return cls(chrom, pos, ref, alt, "unresolved", span)
        if len(ref) == len(alt):
            return cls(chrom, pos, ref, alt, "snv" if len(ref) == 1 else "mnv", span)
        return cls(chrom, pos, ref, alt, "indel", span)


def _integer(value) -> int | None:
    """An INFO value as an integer (SVLEN declared as a String by a caller, or undeclared), else ``None``."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class Edit(NamedTuple):
    """The change a variant makes: forward-strand reference bases ``[start, end)`` become ``alt`` (upper case)."""

    start: int
    end: int
    alt: str

    @property
    def is_substitution(self) -> bool:
        """One base replaced by one base: scored as an SNV."""
        return self.end - self.start == 1 and len(self.alt) == 1


def check(genome: Genome, variant: Variant) -> str | None:
    """The reason ``variant`` cannot be scored whatever the window (a key of ``vep.SKIP_REASONS``), or
    ``None``. Checks the contig, the range, REF against the FASTA, the kind and the bases of the alleles;
    the bases of a symbolic ALT's reference segment are checked by :func:`resolve`."""
    if variant.chrom not in genome:
        return "unknown_contig"
    ref = variant.ref
    length = genome.lengths[variant.chrom]
    if variant.pos < 0 or max(variant.pos + max(len(ref), 1), variant.end) > length:
        return "pos_out_of_range"
    if ref and genome.fetch(variant.chrom, variant.pos, variant.pos + len(ref)).upper() != ref.upper():
        return "ref_mismatch"
    if variant.kind in ("no_alt", "spanning_deletion"):
        return variant.kind
    if variant.kind == "unresolved":
        return "unresolved_symbolic"
    if variant.kind in SYMBOLIC_KINDS:
        if variant.kind == "INS" and not all(map(is_base, variant.inserted)):
            return "alt_not_acgt"
        return None
    if not all(map(is_base, ref)):
        return "ref_not_acgt"
    if not all(map(is_base, variant.alt)):
        return "alt_not_acgt"
    return None


def resolve(genome: Genome, variant: Variant, max_bases: int | None = None) -> Edit | str:
    """The normalised :class:`Edit` of a variant that passed :func:`check`, or a skip reason: ``too_long``
    when the edit changes more than ``max_bases`` bases on either haplotype (tested before a long reference
    segment is read), ``ref_not_acgt`` when a symbolic ALT's segment holds a non-A/C/G/T base."""
    chrom, pos = variant.chrom, variant.pos
    if variant.kind in SYMBOLIC_KINDS:
        size = len(variant.inserted) if variant.kind == "INS" else variant.end - pos - 1
        if max_bases is not None and size > max_bases:
            return "too_long"
        if variant.kind == "INS":
            start, end, alt = pos + 1, pos + 1, variant.inserted.upper()
        else:
            segment = genome.fetch(chrom, pos + 1, variant.end).upper()
            if not all(map(is_base, segment)):
                return "ref_not_acgt"
            if variant.kind == "DEL":
                start, end, alt = pos + 1, variant.end, ""
            elif variant.kind == "DUP":  # the copy inserted after the segment: the same haplotype as before it
                start, end, alt = variant.end, variant.end, segment
            else:  # INV
                start, end, alt = pos + 1, variant.end, reverse_complement(segment)
    else:
        start, end, alt = pos, pos + len(variant.ref), variant.alt.upper()
    edit = normalise(genome, chrom, start, end, alt)
    if max_bases is not None and max(edit.end - edit.start, len(edit.alt)) > max_bases:
        return "too_long"
    return edit


def normalise(genome: Genome, chrom: str, start: int, end: int, alt: str) -> Edit:
    """Trim the common suffix, then the common prefix, of ``ref[start:end]`` and ``alt``; left-align a pure
    insertion or deletion."""
    ref = genome.fetch(chrom, start, end).upper()
    alt = alt.upper()
    while ref and alt and ref[-1] == alt[-1]:
        ref, alt, end = ref[:-1], alt[:-1], end - 1
    while ref and alt and ref[0] == alt[0]:
        ref, alt, start = ref[1:], alt[1:], start + 1
    if bool(ref) == bool(alt):  # a substitution (or nothing): stays where it is
        return Edit(start, end, alt)
    changed = ref or alt
    chunk_start, chunk = start, ""
    while start > 0:
        if start == chunk_start:  # read the bases on the left 64 at a time
            chunk_start = max(0, start - 64)
            chunk = genome.fetch(chrom, chunk_start, start).upper()
        base = chunk[start - 1 - chunk_start]
        if base != changed[-1]:
            break
        changed = base + changed[:-1]
        start -= 1
    if ref:  # a deletion: the deleted bases are the reference's at the new place
        return Edit(start, start + len(changed), "")
    return Edit(start, start, changed)


@dataclass
class HaplotypeWindows:
    """The REF and ALT windows of one edit on one strand (see the module docstring): strings in the strand's
    orientation (upper case) and their token ids (no ``<cls>``)."""

    left: str
    ref_middle: str
    alt_middle: str
    right: str
    left_ids: np.ndarray
    ref_middle_ids: np.ndarray
    alt_middle_ids: np.ndarray
    right_ids: np.ndarray

    def sequence(self, allele: str) -> str:
        """The window's bases, ``allele`` ``"ref"`` or ``"alt"``."""
        return self.left + (self.ref_middle if allele == "ref" else self.alt_middle) + self.right

    def ids(self, allele: str) -> np.ndarray:
        middle = self.ref_middle_ids if allele == "ref" else self.alt_middle_ids
        return np.concatenate([self.left_ids, middle, self.right_ids]).astype(np.int64)

    def scored_tokens(self, allele: str) -> list[int]:
        """Indices (in the window, ``<cls>`` not counted) of the tokens summed in the PLL: the middle's and one
        flank token on each side."""
        n_left, n_right = len(self.left_ids), len(self.right_ids)
        n_middle = len(self.ref_middle_ids if allele == "ref" else self.alt_middle_ids)
        first = n_left - 1 if n_left else 0
        last = n_left + n_middle + (1 if n_right else 0)
        return list(range(first, last))


def haplotype_windows(
    genome: Genome, chrom: str, edit: Edit, strand: str, tokenizer, window_tokens: int
) -> HaplotypeWindows | None:
    """The REF/ALT windows of ``edit`` on ``strand`` (``"+"`` or ``"-"``) with at most ``window_tokens``
    tokens, or ``None`` (``too_long``) when the edit changes more than ``(window_tokens // 2) * k`` bases or its
    longer middle leaves less than one flank token each side."""
    k = int(tokenizer.k)
    length = genome.lengths[chrom]
    reach = window_tokens * k
    before = genome.fetch(chrom, max(0, edit.start - reach), edit.start).upper()
    after = genome.fetch(chrom, edit.end, min(length, edit.end + reach)).upper()
    ref_middle = genome.fetch(chrom, edit.start, edit.end).upper()
    alt_middle = edit.alt
    if strand == "+":
        left_source, right_source = before, after
    else:
        left_source, right_source = reverse_complement(after), reverse_complement(before)
        ref_middle, alt_middle = reverse_complement(ref_middle), reverse_complement(alt_middle)
    left_source = left_source[len(left_source) % k :]  # whole k-mers ending at the edit (at a record end too)
    if max(len(ref_middle), len(alt_middle)) > (window_tokens // 2) * k:
        return None
    encode = tokenizer.encode_genome
    ref_ids, alt_ids = _encode(encode, ref_middle), _encode(encode, alt_middle)
    middle = max(len(ref_ids), len(alt_ids))
    if middle > window_tokens - 2:
        return None
    left_all, right_all = _encode(encode, left_source), _encode(encode, right_source)
    budget = window_tokens - middle
    n_left = min(len(left_all), max(budget // 2, budget - len(right_all)))
    n_right = min(len(right_all), budget - n_left)
    left_ids, right_ids = left_all[len(left_all) - n_left :], right_all[:n_right]
    kmer_ids = np.asarray(tokenizer.kmer_ids, dtype=np.int64)
    left_bases = int(np.where(np.isin(left_ids, kmer_ids), k, 1).sum())
    right_bases = int(np.where(np.isin(right_ids, kmer_ids), k, 1).sum())
    return HaplotypeWindows(
        left_source[len(left_source) - left_bases :],
        ref_middle,
        alt_middle,
        right_source[:right_bases],
        left_ids,
        ref_ids,
        alt_ids,
        right_ids,
    )


def _encode(encode, seq: str) -> np.ndarray:
    return np.asarray(encode(seq), dtype=np.int64) if seq else np.zeros(0, dtype=np.int64)

