"""``genolm data`` commands: ``manifest`` (from NCBI), ``prepare`` (pre-tokenised shards) and ``make-task``
(labelled fine-tuning sets from a genome and its GFF3)."""

from __future__ import annotations

import argparse
import json

from genolm import defaults
from genolm.cli.options import add_overwrite_option, add_quiet_option, comma_list


def manifest_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``genolm data manifest``: a genome manifest of NCBI assemblies."""
    parser = subparsers.add_parser(
        "manifest",
        help="write a genome manifest (TSV) of NCBI assemblies from assembly_summary.txt",
        description="List the latest NCBI assemblies of a taxonomic group, filtered by assembly level and "
        "taxonomy, as a manifest TSV (species, source = accession, weight, assembly metadata). The genomes "
        "base URL is --ncbi-url, else $GENOLM_NCBI_URL, else https://ftp.ncbi.nlm.nih.gov/genomes.",
    )
    parser.add_argument("out", help="manifest TSV to write")
    parser.add_argument("--ncbi-group", default="plant", help="NCBI group folder (default: plant)")
    parser.add_argument("--level", type=comma_list, default=["chromosome", "complete"],
                        help="assembly levels to keep, comma-separated prefixes of chromosome, complete "
                        "genome, scaffold, contig, or 'all' (default: chromosome,complete)")
    parser.add_argument("--database", choices=["refseq", "genbank"], default="refseq")
    parser.add_argument("--taxid", type=comma_list, default=[],
                        help="keep only these taxids / species taxids (comma-separated)")
    parser.add_argument("--organism", default=None, help="regular expression on the organism name")
    parser.add_argument("--all-assemblies", action="store_true",
                        help="keep every latest assembly (default: one per species)")
    parser.add_argument("--weighting", choices=["equal", "size"], default="equal",
                        help="equal weights, or proportional to genome size (default: equal)")
    parser.add_argument("--summary", default=None, help="local or remote assembly_summary.txt to use instead")
    parser.add_argument("--ncbi-url", default=None, help="genomes base URL (a mirror)")
    parser.set_defaults(func=run_manifest)
    return parser


def prepare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``genolm data prepare``: pre-tokenised Parquet/Arrow shards."""
    parser = subparsers.add_parser(
        "prepare",
        help="tokenise the genomes of a manifest into Parquet/Arrow shards",
        description="Cut the genomes of MANIFEST (or one FASTA / folder / accession) into tokenised windows "
        "and write them to OUT_DIR/<split>/<species>/part-*.parquet with genolm_shards.json. Windows are "
        "max-tokens tokens plus <cls>; coordinates are 0-based half-open. genolm.data.genome_dataset(OUT_DIR, "
        "tokenizer) streams them back; `python recipes/pretrain.py --sources OUT_DIR --max_tokens MAX_TOKENS` "
        "pretrains on them. A split that comes out empty or smaller than a batch is warned about.",
    )
    parser.add_argument("manifest", help="manifest TSV/YAML, FASTA file, folder or NCBI accession")
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer folder (from_pretrained); default: GenoLMTokenizer(--vocab-layout, --k)")
    parser.add_argument("--vocab-layout", default="nt-v1", choices=["nt-v1", "nt-v2"])
    parser.add_argument("--k", type=int, default=6, help="k-mer size (default: 6)")
    parser.add_argument("--max-tokens", type=int, default=defaults.PREPARE_MAX_TOKENS,
                        help=f"sequence tokens per window (default: {defaults.PREPARE_MAX_TOKENS})")
    parser.add_argument("--stride", type=int, default=None, help="tokens between window starts (default: max-tokens)")
    parser.add_argument("--splits", type=comma_list, default=["train", "validation"],
                        help="splits to write (default: train,validation)")
    parser.add_argument("--validation-fraction", type=float, default=0.01)
    parser.add_argument("--test-fraction", type=float, default=0.0)
    parser.add_argument("--split-by", choices=["region", "sequence"], default="region")
    parser.add_argument("--max-n-run", type=int, default=50, help="exclude N runs longer than this (default: 50)")
    parser.add_argument("--reverse-complement", type=float, default=0.0,
                        help="probability of writing a window's reverse strand (default: 0)")
    parser.add_argument("--softmask", action="store_true", help="store the per-token soft-mask fraction")
    parser.add_argument("--shuffle", action="store_true", help="shuffle blocks and windows (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="bases per block, the unit of the held-out splits (default: 1000000, halved down to one window "
        "until every split of every genome gets data)",
    )
    parser.add_argument("--num-shards", type=int, default=defaults.PREPARE_NUM_SHARDS,
                        help=f"files per genome and split (default: {defaults.PREPARE_NUM_SHARDS})")
    parser.add_argument("--exclude", default=None, help="regular expression of sequence ids to skip")
    parser.add_argument("--format", dest="file_format", choices=["parquet", "arrow"], default="parquet")
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("--cache-dir", default=None, help="keep indexed copies of remote/unindexed genomes here")
    parser.add_argument("--ncbi-url", default=None, help="genomes base URL for accessions")
    add_overwrite_option(parser, "OUT_DIR")
    add_quiet_option(parser)
    parser.set_defaults(func=run_prepare)
    return parser


def make_task_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``genolm data make-task``: a labelled fine-tuning set from a GFF3."""
    parser = subparsers.add_parser(
        "make-task",
        help="build a labelled fine-tuning set (splice sites, promoters, per-base annotation) from a GFF3",
        description="Derive train/validation/test tables from a genome and its GFF3 annotation (1-based "
        "closed). Writes OUT/{train,validation,test}.parquet (or .csv) and OUT/task.json (schema, label "
        "names, counts). Table coordinates seq_id/start/end are 0-based half-open; regions on the command "
        "line are 'chr' or 'chr:start-end', 1-based closed.",
    )
    parser.add_argument("--fasta", required=True, help="genome FASTA (record ids as in GFF3 column 1)")
    parser.add_argument("--gff3", required=True, help="annotation GFF3")
    parser.add_argument("--task", required=True, choices=["splice_sites", "promoters", "cds_tokens"])
    parser.add_argument("out", help="output folder")
    parser.add_argument(
        "--window", type=int, default=None, help="window length in bp (splice_sites: 400, cds_tokens: 6000)"
    )
    parser.add_argument(
        "--stride", type=int, default=None, help="cds_tokens: step between windows (default: window)"
    )
    parser.add_argument(
        "--sites",
        choices=["both", "donor", "acceptor"],
        default="both",
        help="splice_sites: 3 classes, or donor / acceptor vs none",
    )
    parser.add_argument("--canonical-only", action="store_true", help="splice_sites: only GT/GC...AG introns")
    parser.add_argument("--upstream", type=int, default=250, help="promoters: bp before the TSS (default: 250)")
    parser.add_argument(
        "--downstream", type=int, default=50, help="promoters: bp from the TSS on (default: 50)"
    )
    parser.add_argument("--negatives-per-positive", type=float, default=1.0)
    parser.add_argument("--regions", type=comma_list, default=[], help="keep only rows inside these regions")
    parser.add_argument("--test-chromosomes", type=comma_list, default=[])
    parser.add_argument("--validation-chromosomes", type=comma_list, default=[])
    parser.add_argument("--test-regions", type=comma_list, default=[])
    parser.add_argument("--validation-regions", type=comma_list, default=[])
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="without held-out chromosomes/regions: share of rows held out as blocks of genes",
    )
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="smallest span of a held-out block of genes (default: 10 windows)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", dest="file_format", choices=["parquet", "csv"], default="parquet")
    add_overwrite_option(parser, "OUT")
    add_quiet_option(parser)
    parser.set_defaults(func=run_make_task)
    return parser


def run_manifest(args: argparse.Namespace) -> int:
    from genolm.data.manifest import build_ncbi_manifest

    levels = None if [level.lower() for level in args.level] == ["all"] else args.level
    entries = build_ncbi_manifest(
        args.out,
        group=args.ncbi_group,
        levels=levels,
        database=args.database,
        taxids=args.taxid or None,
        organism=args.organism,
        one_per_species=not args.all_assemblies,
        weighting=args.weighting,
        base_url=args.ncbi_url,
        summary=args.summary,
    )
    print(f"wrote {len(entries)} assemblies to {args.out}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from genolm.data.shards import prepare_shards
    from genolm.tokenization_genolm import GenoLMTokenizer

    if args.tokenizer:
        tokenizer = GenoLMTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = GenoLMTokenizer(vocab_layout=args.vocab_layout, k=args.k)
    metadata = prepare_shards(
        args.manifest,
        args.out_dir,
        tokenizer,
        args.max_tokens,
        args.stride,
        splits=tuple(args.splits),
        file_format=args.file_format,
        num_proc=args.num_proc,
        progress=not args.quiet,
        overwrite=args.overwrite,
        ncbi_url=args.ncbi_url,
        cache_dir=args.cache_dir,
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
        split_by=args.split_by,
        max_n_run=args.max_n_run,
        reverse_complement=args.reverse_complement,
        softmask=args.softmask,
        shuffle=args.shuffle,
        seed=args.seed,
        block_size=args.block_size,
        num_shards=args.num_shards,
        exclude=args.exclude,
    )
    summary = {
        split: {key: {"rows": meta.get("rows", 0), "tokens": meta.get("tokens", 0)} for key, meta in genomes.items()}
        for split, genomes in metadata["splits"].items()
    }
    if not args.quiet:
        print(json.dumps(summary, indent=2))
    return 0


def run_make_task(args: argparse.Namespace) -> int:
    from genolm.data.tasks import make_task

    info = make_task(
        args.fasta,
        args.gff3,
        args.task,
        args.out,
        file_format=args.file_format,
        overwrite=args.overwrite,
        window=args.window,
        stride=args.stride,
        sites=args.sites,
        canonical_only=args.canonical_only,
        upstream=args.upstream,
        downstream=args.downstream,
        negatives_per_positive=args.negatives_per_positive,
        regions=args.regions,
        test_chromosomes=args.test_chromosomes,
        validation_chromosomes=args.validation_chromosomes,
        test_regions=args.test_regions,
        validation_regions=args.validation_regions,
        test_fraction=args.test_fraction,
        validation_fraction=args.validation_fraction,
        block_size=args.block_size,
        seed=args.seed,
    )
    if not args.quiet:
        print(json.dumps(info["counts"], indent=2))
    return 0
