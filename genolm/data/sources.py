"""Genome sources: what a ``source`` string points to, resolved to the FASTA files to read.

* a local FASTA file (plain, gzip or bgzip). With a ``.fai`` index (and ``.gzi`` for bgzip) it is
  read by random access (pysam); without one it is streamed, or, with ``cache_dir``, converted once
  into an indexed bgzip copy;
* a local folder: every FASTA file in it (``.fa``, ``.fasta``, ``.fna``, ... optionally ``.gz``);
* a URL (``https://``, ``http://`` or any fsspec protocol): streamed and gunzipped on the fly, or
  cached as above;
* an NCBI assembly accession (``GCF_000001735.4``, ``GCA_...``): the assembly's
  ``*_genomic.fna.gz`` under the NCBI base URL (see :mod:`genolm.data.ncbi`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from genolm.data.ncbi import is_accession, resolve_accession
from genolm.data.remote import cached_indexed_copy
from genolm.genome.fasta import FASTA_SUFFIXES, GZIP_SUFFIXES, GenomeDataError, is_fasta_name, is_url
from genolm.genome.index import IndexedFasta, find_index

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenomeFile:
    """One FASTA file of a genome: ``location`` (path or URL) and, when indexed, its ``.fai``/``.gzi``."""

    species: str
    location: str
    fai: str | None = None
    gzi: str | None = None

    @property
    def indexed(self) -> bool:
        return self.fai is not None

    def open_indexed(self) -> IndexedFasta:
        if self.fai is None:
            raise ValueError(f"{self.location} has no index")
        return IndexedFasta(self.location, self.fai, self.gzi)


def default_species(source: str) -> str:
    """A species label for a bare source: the accession, or the file/folder name without FASTA suffixes."""
    if is_accession(source):
        return source
    name = Path(str(source).rstrip("/")).name
    lower = name.lower()
    for suffix in GZIP_SUFFIXES + FASTA_SUFFIXES:
        if lower.endswith(suffix):
            name, lower = name[: -len(suffix)], lower[: -len(suffix)]
    return name or str(source)


def resolve_source(
    source: str | Path,
    species: str | None = None,
    *,
    ncbi_url: str | None = None,
    cache_dir: str | Path | None = None,
) -> list[GenomeFile]:
    """Resolve a source to its FASTA files (see the module docstring); raises :class:`GenomeDataError`."""
    text = str(source).strip()
    species = species or default_species(text)
    if is_accession(text):
        text = resolve_accession(text, ncbi_url)
    if is_url(text):
        if cache_dir is not None:
            local = cached_indexed_copy(text, cache_dir)
            return [GenomeFile(species, str(local), f"{local}.fai", f"{local}.gzi")]
        return [GenomeFile(species, text)]
    path = Path(text).expanduser()
    if not path.exists():
        raise GenomeDataError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_fasta_name(p.name))
        if not files:
            raise GenomeDataError(f"{path}: folder contains no FASTA files ({', '.join(FASTA_SUFFIXES)}, optionally .gz)")
        return [_local_file(p, species, cache_dir) for p in files]
    return [_local_file(path, species, cache_dir)]


def _local_file(path: Path, species: str, cache_dir: str | Path | None) -> GenomeFile:
    if path.stat().st_size == 0:
        raise GenomeDataError(f"{path}: empty file")
    index = find_index(path)
    if index is not None:
        fai, gzi = index
        return GenomeFile(species, str(path), str(fai), str(gzi) if gzi else None)
    if cache_dir is not None:
        local = cached_indexed_copy(str(path.resolve()), cache_dir)
        return GenomeFile(species, str(local), f"{local}.fai", f"{local}.gzi")
    logger.info(
        "%s has no .fai/.gzi index: it will be streamed by one worker. Index it (`samtools faidx`, after "
        "`bgzip` for .gz) or pass cache_dir= for random access and parallel loading.",
        path,
    )
    return GenomeFile(species, str(path))
