"""Nucleotide letters: the byte table every reader and the tokenizer share, and the reverse complement.

Valid sequence letters are the IUPAC nucleotide codes ``ACGTU`` + ``N`` + ``RYSWKMBDHV`` and ``X`` (hard
mask), in either case. :data:`TO_ACGTN` normalises them for models: ``a/c/g/t`` are upper-cased, ``U`` is
read as ``T``, ``N``, the ambiguity codes and ``X`` become ``N``. Every other byte is invalid: FASTA readers
raise on it, the tokenizer turns it into ``<unk>``.
"""

from __future__ import annotations

import numpy as np

NUCLEOTIDE_LETTERS = b"ACGTNRYSWKMBDHVUX"
AMBIGUITY_CODES = b"RYSWKMBDHV"  # two- and three-base IUPAC codes (read as N)

VALID = np.zeros(256, dtype=bool)  # byte -> valid sequence letter (either case)
AMBIGUOUS = np.zeros(256, dtype=bool)  # valid letters read as N other than N itself (IUPAC codes, X)
LOWER = np.zeros(256, dtype=bool)  # byte -> lower-case ASCII letter (soft-masked when valid)
for _c in NUCLEOTIDE_LETTERS:
    for _b in (_c, _c + 32):
        VALID[_b] = True
        AMBIGUOUS[_b] = _c not in b"ACGTNU"
LOWER[ord("a") : ord("z") + 1] = True

_TO_ACGTN = bytearray(range(256))
for _c in NUCLEOTIDE_LETTERS:
    _TO_ACGTN[_c] = _TO_ACGTN[_c + 32] = _c if _c in b"ACGTN" else ord("T") if _c == ord("U") else ord("N")
TO_ACGTN = bytes(_TO_ACGTN)
"""``bytes.translate`` table: valid letters -> upper-case ``A/C/G/T/N`` (``U`` -> ``T``); invalid bytes unchanged."""

_COMPLEMENT_OF = dict(zip("ACGTURYKMBVDHSWNX", "TGCAAYRMKVBHDSWNX", strict=True))
_COMPLEMENT = bytearray(range(256))
for _x, _y in _COMPLEMENT_OF.items():
    _COMPLEMENT[ord(_x)], _COMPLEMENT[ord(_x.lower())] = ord(_y), ord(_y.lower())
COMPLEMENT = bytes(_COMPLEMENT)
"""``bytes.translate`` table of the IUPAC complement, case kept (``R<->Y``, ``K<->M``, ``B<->V``, ``D<->H``;
``S``, ``W``, ``N``, ``X`` are their own complement; ``U`` -> ``A``); other bytes unchanged."""
_COMPLEMENT_STR = {i: c for i, c in enumerate(COMPLEMENT) if i != c and i < 128}


def normalise(bases: bytes) -> bytes:
    """Upper-case ``A/C/G/T``, ``U`` -> ``T``, every other valid letter -> ``N`` (invalid bytes unchanged)."""
    return bases.translate(TO_ACGTN)


def complement(seq: str) -> str:
    """IUPAC complement of a nucleotide string, case kept (other characters unchanged)."""
    return seq.translate(_COMPLEMENT_STR)


def reverse_complement(seq: str | bytes) -> str | bytes:
    """IUPAC reverse complement of a ``str`` or ``bytes`` sequence, case kept (see :data:`COMPLEMENT`).

    An involution on every letter but ``U`` (read back as ``T``).
    """
    if isinstance(seq, str):
        return seq.translate(_COMPLEMENT_STR)[::-1]
    return bytes(seq).translate(COMPLEMENT)[::-1]


def is_base(char: str) -> bool:
    """Whether one character is an unambiguous base (A/C/G/T, either case): a valid SNV allele."""
    return len(char) == 1 and char in "ACGTacgt"


def describe_byte(value: int) -> str:
    """How an invalid sequence byte is named in error messages."""
    char = chr(value)
    if char.isprintable() and value < 128:
        return f"invalid character {char!r}"
    return f"binary byte 0x{value:02x} (not a FASTA text file?)"
