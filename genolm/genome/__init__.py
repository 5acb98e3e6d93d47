"""Genome I/O: the one FASTA reader (streaming and indexed), index checks, nucleotide tables and reverse
complement, regions, and the GFF3 reader. Every other part of genolm reads genomes through this package."""

from .bases import TO_ACGTN, VALID, complement, is_base, normalise, reverse_complement
from .fasta import GenomeDataError, fasta_stats, iter_fasta_blocks, iter_records, read_records
from .gff3 import GFF3, Feature, Transcript, read_gff3
from .index import IndexedFasta, find_index, index_problem, read_fai, sequence_lengths
from .reference import Reference
from .regions import Region, parse_region

__all__ = [
    "GFF3",
    "TO_ACGTN",
    "VALID",
    "Feature",
    "GenomeDataError",
    "IndexedFasta",
    "Reference",
    "Region",
    "Transcript",
    "complement",
    "fasta_stats",
    "find_index",
    "index_problem",
    "is_base",
    "iter_fasta_blocks",
    "iter_records",
    "normalise",
    "parse_region",
    "read_fai",
    "read_gff3",
    "read_records",
    "reverse_complement",
    "sequence_lengths",
]
