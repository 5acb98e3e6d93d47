"""Inference commands: ``genolm vep``, ``genolm ism`` and ``genolm annotate``.

Started under ``torchrun --nproc_per_node N -m genolm ...`` or ``accelerate launch --num_processes N -m
genolm ...``, each command shares its chunks between the processes; ``--resume`` continues a killed run.

Each parser only reads options and calls the library function of the same task (``run_vep``, ``run_ism``,
``run_annotate``), which notebooks and benchmarks call too.
"""

from __future__ import annotations

import argparse

from genolm import defaults
from genolm.cli.options import add_resume_options, add_runtime_options, apply_runtime_options, comma_list

WINDOW_HELP = (
    "tokens per window, <cls> excluded (default: the model's maximum, e.g. 1023 tokens = 6,138 bp for 6-mers); "
    "the window is a run of whole tokens of the sequence's tokenisation from its first base, centred on the "
    "scored token"
)


def vep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``genolm vep``: zero-shot variant effect scores."""
    vep = subparsers.add_parser(
        "vep",
        help="zero-shot variant effect scores of a VCF (SNVs, indels, MNVs, symbolic SVs)",
        description="Score every ALT allele of a VCF with a masked language model. SNV: the token holding the "
        "variant is masked and GENOLM_LLR = log P(alt k-mer) - log P(ref k-mer). Indel, MNV, <DEL>, <INS> (with "
        "INFO SVINSSEQ), <DUP> (tandem), <INV> (INFO END or SVLEN): the change is trimmed and left-aligned, and "
        "GENOLM_LLR = PLL(ALT window) - PLL(REF window). Both windows share the same flanks: the left flank is "
        "whole k-mers ending exactly where the change starts, the right flank k-mers from where it ends; the "
        "changed bases between them are tokenised alone (k-mers, then single bases). The flanks take "
        "(W - M) // 2 and the rest of W tokens, M the longer changed part, so the longer window has W tokens. "
        "PLL sums log P(token | that token masked) over the changed tokens and one flank token each side (one "
        "forward pass per token). Every record is written, in order; records that cannot be scored carry "
        "GENOLM_SKIP (unknown_contig, pos_out_of_range, ref_mismatch, no_alt, spanning_deletion, "
        "unresolved_symbolic, too_long: over half a window of bases changed, ref_not_acgt, alt_not_acgt). VCF POS "
        "is 1-based.",
    )
    vep.add_argument("--model", required=True, help="masked-LM checkpoint folder")
    vep.add_argument(
        "--fasta", required=True, help="reference FASTA (.fa, .fa.gz) the VCF was called against"
    )
    vep.add_argument("--vcf", required=True, help="input .vcf, .vcf.gz or .bcf")
    vep.add_argument(
        "--out",
        required=True,
        help="output .vcf, .vcf.gz (bgzip + tabix index), .bcf (input records + INFO fields), .tsv (one row per ALT "
        "allele, pos 1-based) or .parquet (the same rows, typed)",
    )
    vep.add_argument(
        "--rc", action="store_true", help="average with the reverse-complement strand (SNVs and indels alike)"
    )
    vep.add_argument(
        "--embedding-distance",
        action="store_true",
        help="also write GENOLM_EMB_DIST: L2 distance of the mean final embeddings of the ref and alt windows",
    )
    vep.add_argument(
        "--background",
        type=int,
        default=0,
        metavar="N",
        help="score N random SNVs of the FASTA once (positions uniform over its A/C/G/T bases, a random other "
        "base) and write each allele's percentile among them: GENOLM_LLR_PCT (TSV llr_pct) = percentage of "
        "background scores <= the allele's GENOLM_LLR; the background holds SNVs only (default 0: none)",
    )
    vep.add_argument(
        "--background-seed", type=int, default=0, help="random seed of the --background SNVs (default 0)"
    )
    vep.add_argument(
        "--window-tokens", type=int, default=None, help=WINDOW_HELP + " (an SNV's; indels: see above)"
    )
    vep.add_argument(
        "--chunk-records",
        type=int,
        default=10_000,
        help="records scored at a time: the unit shared between processes and of --resume (default 10000)",
    )
    add_runtime_options(vep, defaults.VEP_BATCH_SIZE)
    add_resume_options(vep)
    vep.set_defaults(func=run_vep)
    return vep


CHUNK_BASES = 6_000  # default of --chunk-bases


def ism_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``genolm ism``: in-silico mutagenesis of a region, or of the promoters of GFF3 features."""
    ism = subparsers.add_parser(
        "ism",
        help="in-silico mutagenesis: score every single-base substitution in a region or in promoters",
        description="Score all 3 substitutions of every base in a region like `genolm vep` scores an SNV. One "
        "masked forward pass scores all 3k substitutions of a k-mer token. With --region: writes a TSV (chrom, "
        "pos, ref, alt, score; pos 1-based) and optionally a heatmap. With --feature TYPE --gff3 G: scores the "
        "promoter of every feature of that type (--upstream bases before its 5' end and --downstream from it, "
        "on its strand; clipped at sequence ends; overlapping promoters are scored once per feature) and writes "
        "PREFIX.parquet (feature_id, chrom, strand, pos, rel_pos, ref, alt, score; forward-strand bases, pos "
        "1-based, rel_pos 0 at the 5' end and negative upstream), PREFIX.summary.tsv (one row per feature) and, "
        "with --plot-top K, heatmaps in PREFIX.plots/. Promoter runs split over `torchrun` processes and resume "
        "with --resume.",
    )
    ism.add_argument("--model", required=True, help="masked-LM checkpoint folder")
    ism.add_argument("--fasta", required=True, help="reference FASTA (.fa, .fa.gz)")
    what = ism.add_mutually_exclusive_group(required=True)
    what.add_argument("--region", help="NAME:START-END, 1-based closed (as in samtools), or NAME")
    what.add_argument(
        "--feature",
        metavar="TYPE",
        help="score the promoters of the --gff3 features of this type (column 3, e.g. gene, mRNA)",
    )
    ism.add_argument(
        "--out",
        required=True,
        help="--region: output table (.tsv); --feature: output prefix PREFIX (PREFIX.parquet, "
        "PREFIX.summary.tsv, PREFIX.plots/)",
    )
    ism.add_argument(
        "--plot", default=None, help="--region: heatmap image (.png, .pdf, .svg): positions x bases"
    )
    ism.add_argument(
        "--gff3",
        default=None,
        help="--region: draw the GFF3 features overlapping the region under the heatmap; --feature: the "
        "annotation to take the features from",
    )
    promoters = ism.add_argument_group("promoters (--feature)")
    promoters.add_argument(
        "--upstream",
        type=int,
        default=1000,
        help="bases before the 5' end, on the feature's strand (default 1000)",
    )
    promoters.add_argument(
        "--downstream", type=int, default=200, help="bases from the 5' end into the feature (default 200)"
    )
    ids = promoters.add_mutually_exclusive_group()
    ids.add_argument(
        "--ids", type=comma_list, default=None, help="only these features, by ID or Name: id1,id2,..."
    )
    ids.add_argument(
        "--ids-file", default=None, help="only the features listed in this file (one ID or Name a line)"
    )
    promoters.add_argument(
        "--plot-top",
        type=int,
        default=0,
        metavar="K",
        help="heatmaps of the K features with the highest mean |score| in PREFIX.plots/ (default 0: none)",
    )
    promoters.add_argument(
        "--chunk-features",
        type=int,
        default=16,
        help="features per unit of work: a Parquet part that --resume keeps and processes share (default 16)",
    )
    ism.add_argument("--rc", action="store_true", help="average with the reverse-complement strand")
    ism.add_argument(
        "--naive",
        action="store_true",
        help="score with the direct loop (mutate, re-tokenise, mask, score: 3 forward passes per base), for checking",
    )
    ism.add_argument("--window-tokens", type=int, default=None, help=WINDOW_HELP)
    ism.add_argument(
        "--chunk-bases",
        type=int,
        default=CHUNK_BASES,
        help=f"--region: bases scored at a time: the unit shared between processes and of --resume "
        f"(default {CHUNK_BASES})",
    )
    add_runtime_options(ism, defaults.ISM_BATCH_SIZE)
    add_resume_options(ism)
    ism.set_defaults(func=run_ism)
    return ism


def annotate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``genolm annotate``: whole-genome annotation with a token-classification model."""
    annotate = subparsers.add_parser(
        "annotate",
        help="annotate whole genomes with a token-classification model (GFF3/BED intervals, probability tracks)",
        description="Slide a token/nucleotide-classification model over every sequence with overlapping windows; "
        "each base keeps the prediction of the window where it is most central. Writes intervals per label: GFF3 "
        "(1-based closed, score = mean probability) or BED (0-based half-open, score 0-1000). Streams the FASTA "
        "sequence by sequence.",
    )
    annotate.add_argument("--model", required=True, help="token-classification checkpoint folder")
    annotate.add_argument("--fasta", required=True, help="genome FASTA (.fa, .fa.gz; plain gzip works too)")
    annotate.add_argument("--out", required=True, help="output .gff3 or .bed")
    annotate.add_argument(
        "--bigwig-dir",
        default=None,
        help="also write one probability track per label here (LABEL.bw with pyBigWig, else LABEL.bedGraph)",
    )
    annotate.add_argument(
        "--window-tokens", type=int, default=None, help="tokens per window (default: model maximum)"
    )
    annotate.add_argument(
        "--stride-tokens",
        type=int,
        default=None,
        help="tokens between window starts (default: half a window)",
    )
    annotate.add_argument(
        "--threshold", type=float, default=0.5, help="calling threshold of multi-label models (default 0.5)"
    )
    annotate.add_argument(
        "--skip-label",
        action="append",
        default=[],
        metavar="LABEL",
        help="write no intervals for this label (e.g. a background class); repeatable",
    )
    add_runtime_options(annotate, defaults.ANNOTATE_BATCH_SIZE)
    add_resume_options(annotate)
    annotate.set_defaults(func=run_annotate)
    return annotate


def run_vep(args: argparse.Namespace) -> int:
    from genolm.inference import vep

    apply_runtime_options(args)
    vep.run_vep(
        args.model,
        args.fasta,
        args.vcf,
        args.out,
        window_tokens=args.window_tokens,
        rc=args.rc,
        embedding_distance=args.embedding_distance,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        chunk_records=args.chunk_records,
        progress=not args.quiet,
        resume=args.resume,
        overwrite=args.overwrite,
        background=args.background,
        background_seed=args.background_seed,
    )
    return 0


def run_ism(args: argparse.Namespace) -> int:
    from genolm.errors import ConfigError
    from genolm.inference import ism

    apply_runtime_options(args)
    if args.feature is not None:
        from genolm.inference import promoters

        if args.gff3 is None:
            raise ConfigError("--feature needs --gff3, the annotation to take the features from")
        if args.plot is not None:
            raise ConfigError("--plot draws one --region; with --feature use --plot-top K")
        if args.chunk_bases != CHUNK_BASES:
            raise ConfigError("--chunk-bases cuts one --region; with --feature the unit is --chunk-features")
        promoters.run_promoter_ism(
            args.model,
            args.fasta,
            args.gff3,
            args.out,
            feature=args.feature,
            ids=args.ids,
            ids_file=args.ids_file,
            upstream=args.upstream,
            downstream=args.downstream,
            plot_top=args.plot_top,
            window_tokens=args.window_tokens,
            rc=args.rc,
            naive=args.naive,
            features_per_chunk=args.chunk_features,
            resume=args.resume,
            overwrite=args.overwrite,
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            compile=args.compile,
            progress=not args.quiet,
        )
        return 0
    used = [flag for flag, value, default in PROMOTER_ONLY if getattr(args, value) != default]
    if used:
        raise ConfigError(
            f"{', '.join(used)} select or write promoters: use them with --feature, not --region"
        )
    ism.run_ism(
        args.model,
        args.fasta,
        args.region,
        args.out,
        plot=args.plot,
        gff3=args.gff3,
        window_tokens=args.window_tokens,
        rc=args.rc,
        naive=args.naive,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        chunk_bases=args.chunk_bases,
        progress=not args.quiet,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    return 0


# (flag, attribute, default) of the options that only --feature reads.
PROMOTER_ONLY = [
    ("--upstream", "upstream", 1000),
    ("--downstream", "downstream", 200),
    ("--ids", "ids", None),
    ("--ids-file", "ids_file", None),
    ("--plot-top", "plot_top", 0),
    ("--chunk-features", "chunk_features", 16),
]


def run_annotate(args: argparse.Namespace) -> int:
    from genolm.inference import annotate

    apply_runtime_options(args)
    annotate.run_annotate(
        args.model,
        args.fasta,
        args.out,
        bigwig_dir=args.bigwig_dir,
        window_tokens=args.window_tokens,
        stride_tokens=args.stride_tokens,
        threshold=args.threshold,
        skip_labels=args.skip_label,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        progress=not args.quiet,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    return 0
