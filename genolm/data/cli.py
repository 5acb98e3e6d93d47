"""``genolm data ...`` subcommands: ``manifest`` (from NCBI) and ``prepare`` (pre-tokenised shards).

:func:`add_data_parser` registers the ``data`` command and returns its sub-subparsers, so other modules
can add more ``genolm data`` commands to it.
"""

from __future__ import annotations

import argparse
import json


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_data_parser(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Register ``genolm data`` (with ``manifest`` and ``prepare``); returns the ``data`` sub-subparsers."""
    data = subparsers.add_parser(
        "data",
        help="genome manifests and pre-tokenised training shards",
        description="Build genome manifests and pre-tokenised shards for pretraining.",
    )
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    manifest = commands.add_parser(
        "manifest",
        help="write a genome manifest (TSV) of NCBI assemblies from assembly_summary.txt",
        description="List the latest NCBI assemblies of a taxonomic group, filtered by assembly level and "
        "taxonomy, as a manifest TSV (species, source = accession, weight, assembly metadata). The genomes "
        "base URL is --ncbi-url, else $GENOLM_NCBI_URL, else https://ftp.ncbi.nlm.nih.gov/genomes.",
    )
    manifest.add_argument("out", help="manifest TSV to write")
    manifest.add_argument("--ncbi-group", default="plant", help="NCBI group folder (default: plant)")
    manifest.add_argument("--level", type=_comma_list, default=["chromosome", "complete"],
                          help="assembly levels to keep, comma-separated prefixes of chromosome, complete "
                          "genome, scaffold, contig, or 'all' (default: chromosome,complete)")
    manifest.add_argument("--database", choices=["refseq", "genbank"], default="refseq")
    manifest.add_argument("--taxid", type=_comma_list, default=[],
                          help="keep only these taxids / species taxids (comma-separated)")
    manifest.add_argument("--organism", default=None, help="regular expression on the organism name")
    manifest.add_argument("--all-assemblies", action="store_true",
                          help="keep every latest assembly (default: one per species)")
    manifest.add_argument("--weighting", choices=["equal", "size"], default="equal",
                          help="equal weights, or proportional to genome size (default: equal)")
    manifest.add_argument("--summary", default=None, help="local or remote assembly_summary.txt to use instead")
    manifest.add_argument("--ncbi-url", default=None, help="genomes base URL (a mirror)")
    manifest.set_defaults(func=_run_manifest)

    prepare = commands.add_parser(
        "prepare",
        help="tokenise the genomes of a manifest into Parquet/Arrow shards",
        description="Cut the genomes of MANIFEST (or one FASTA / folder / accession) into tokenised windows "
        "and write them to OUT_DIR/<split>/<species>/part-*.parquet with genolm_shards.json. Windows are "
        "max-tokens tokens plus <cls>; coordinates are 0-based half-open. genolm.data.genome_dataset(OUT_DIR, "
        "tokenizer) streams them back.",
    )
    prepare.add_argument("manifest", help="manifest TSV/YAML, FASTA file, folder or NCBI accession")
    prepare.add_argument("out_dir", help="output folder")
    prepare.add_argument("--tokenizer", default=None,
                         help="tokenizer folder (from_pretrained); default: GenoLMTokenizer(--vocab-layout, --k)")
    prepare.add_argument("--vocab-layout", default="nt-v1", choices=["nt-v1", "nt-v2"])
    prepare.add_argument("--k", type=int, default=6, help="k-mer size (default: 6)")
    prepare.add_argument("--max-tokens", type=int, default=1000, help="sequence tokens per window (default: 1000)")
    prepare.add_argument("--stride", type=int, default=None, help="tokens between window starts (default: max-tokens)")
    prepare.add_argument("--splits", type=_comma_list, default=["train", "validation"],
                         help="splits to write (default: train,validation)")
    prepare.add_argument("--validation-fraction", type=float, default=0.01)
    prepare.add_argument("--test-fraction", type=float, default=0.0)
    prepare.add_argument("--split-by", choices=["region", "sequence"], default="region")
    prepare.add_argument("--max-n-run", type=int, default=50, help="exclude N runs longer than this (default: 50)")
    prepare.add_argument("--reverse-complement", type=float, default=0.0,
                         help="probability of writing a window's reverse strand (default: 0)")
    prepare.add_argument("--softmask", action="store_true", help="store the per-token soft-mask fraction")
    prepare.add_argument("--shuffle", action="store_true", help="shuffle blocks and windows (seeded)")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--block-size", type=int, default=1_000_000, help="bases per block (default: 1000000)")
    prepare.add_argument("--num-shards", type=int, default=16, help="files per genome and split (default: 16)")
    prepare.add_argument("--exclude", default=None, help="regular expression of sequence ids to skip")
    prepare.add_argument("--format", dest="file_format", choices=["parquet", "arrow"], default="parquet")
    prepare.add_argument("--num-proc", type=int, default=1, help="worker processes (default: 1)")
    prepare.add_argument("--cache-dir", default=None, help="keep indexed copies of remote/unindexed genomes here")
    prepare.add_argument("--ncbi-url", default=None, help="genomes base URL for accessions")
    prepare.add_argument("--overwrite", action="store_true", help="allow a non-empty OUT_DIR")
    prepare.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    prepare.set_defaults(func=_run_prepare)
    from genolm.downstream_cli import add_make_task_parser

    add_make_task_parser(commands)  # genolm data make-task (annotation-derived fine-tuning sets)
    return commands


def _run_manifest(args: argparse.Namespace) -> int:
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


def _run_prepare(args: argparse.Namespace) -> int:
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
        progress=not args.no_progress,
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
    print(json.dumps(summary, indent=2))
    return 0
