"""The example genome bundled with genolm: the *Arabidopsis thaliana* chloroplast (NC_000932.1, 154,478 bp).

See ``README.md`` in this folder for its provenance and licence.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
CHLOROPLAST_ID = "NC_000932.1"


def chloroplast_path() -> Path:
    """Path of the bundled, bgzip-compressed and faidx-indexed chloroplast FASTA."""
    return EXAMPLES_DIR / "athaliana_chloroplast.fa.gz"


@lru_cache(maxsize=1)
def read_chloroplast() -> str:
    """The chloroplast genome as an upper-case string (154,478 bp)."""
    from genolm.genome import Reference

    with Reference(chloroplast_path()) as fasta:
        return fasta.fetch(CHLOROPLAST_ID, 0, fasta.lengths[CHLOROPLAST_ID]).upper()
