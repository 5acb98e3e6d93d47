"""Genome data: FASTA sources (local, bgzip, NCBI), tokenised windows, mixtures and pre-tokenised shards.

The main entry point is :func:`genome_dataset`, a streaming :class:`datasets.IterableDataset` of
tokenised windows; :func:`prepare_shards` writes the same rows to Parquet/Arrow once.
"""

from genolm.data.manifest import ManifestEntry, build_ncbi_manifest, load_manifest, write_manifest
from genolm.data.ncbi import assembly_directory, ncbi_base_url, resolve_accession
from genolm.data.shards import load_shards, prepare_shards
from genolm.data.sources import GenomeFile, resolve_source
from genolm.data.windows import (
    WINDOW_COLUMNS,
    WindowOptions,
    collate_windows,
    genome_dataset,
    split_of,
    window_features,
)
from genolm.genome.fasta import GenomeDataError

__all__ = [
    "WINDOW_COLUMNS",
    "GenomeDataError",
    "GenomeFile",
    "ManifestEntry",
    "WindowOptions",
    "assembly_directory",
    "build_ncbi_manifest",
    "collate_windows",
    "genome_dataset",
    "load_manifest",
    "load_shards",
    "ncbi_base_url",
    "prepare_shards",
    "resolve_accession",
    "resolve_source",
    "split_of",
    "window_features",
    "write_manifest",
]
