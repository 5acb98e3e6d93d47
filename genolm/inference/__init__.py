"""Genome-scale inference with genolm models: zero-shot variant effects (``genolm vep``), in-silico mutagenesis
(``genolm ism``) and whole-genome annotation (``genolm annotate``). Each command is a function here, also for
notebooks and benchmarks; ``genolm.cli.inference`` only parses arguments and calls them.

Coordinates: the Python API is 0-based half-open; VCF ``POS``, GFF3 and ``--region`` are 1-based closed.
"""

from ..genome import parse_region
from .annotate import AnnotateReport, annotate_fasta, naive_predict_bases, predict_bases, run_annotate
from .genome import Genome, TokenGrid, Window
from .ism import ISMResult, ism_region, naive_ism_region, plot_ism, run_ism
from .promoters import run_promoter_ism
from .scoring import load_model
from .vep import SKIP_REASONS, SNV, VariantScore, VepReport, naive_variant_score, run_vep, score_variants

__all__ = [
    "SKIP_REASONS",
    "SNV",
    "AnnotateReport",
    "Genome",
    "ISMResult",
    "TokenGrid",
    "VariantScore",
    "VepReport",
    "Window",
    "annotate_fasta",
    "ism_region",
    "load_model",
    "naive_ism_region",
    "naive_predict_bases",
    "naive_variant_score",
    "parse_region",
    "plot_ism",
    "predict_bases",
    "run_annotate",
    "run_ism",
    "run_promoter_ism",
    "run_vep",
    "score_variants",
]
