"""Subcommands for downstream use: ``genolm embed``, ``genolm publish`` and ``genolm data make-task``.

Each one parses its arguments and calls a library function (:func:`genolm.embed.embed_fasta`,
:func:`genolm.publish.publish`, :func:`genolm.data.tasks.make_task`).
"""

from __future__ import annotations

import argparse
import json


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_downstream_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``embed`` and ``publish`` on the ``genolm`` parser."""
    embed = subparsers.add_parser(
        "embed",
        help="embed the records of a FASTA file with a genolm checkpoint",
        description="Embed every record of a FASTA file. Records longer than the context are cut into "
        "non-overlapping windows whose token states are pooled per record. Output keyed by record id: "
        ".parquet (columns id, length, embedding), .npy (matrix + OUT.ids.txt; pooled only) or .npz (one "
        "array per record id).",
    )
    embed.add_argument(
        "--model",
        required=True,
        help="checkpoint folder or Hub id (genolm, or ESM format such as NT / AgroNT)",
    )
    embed.add_argument("--fasta", required=True, help="input FASTA (plain, gzip or bgzip)")
    embed.add_argument("--out", required=True, help="output file: .parquet, .npy or .npz")
    embed.add_argument(
        "--pool",
        choices=["mean", "cls", "none"],
        default="mean",
        help="mean over tokens, the <cls> state, or per-token states (default: mean)",
    )
    embed.add_argument(
        "--layer",
        type=int,
        default=-1,
        help="hidden state: 0 = token embeddings, i = layer i, -1 = final output (default)",
    )
    embed.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")
    embed.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="tokens per window including <cls> (default: the model's context)",
    )
    embed.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    embed.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    embed.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    embed.set_defaults(func=_run_embed)

    publish = subparsers.add_parser(
        "publish",
        help="write a Hub-ready model folder (weights, tokenizer, model card) and optionally push it",
        description="Write safetensors weights, config, tokenizer files and a model card (README.md with YAML "
        "metadata) for a checkpoint. Training configuration and metrics found beside the checkpoint go into "
        "the card. --format esm writes transformers' ESM classes (NT v1 / AgroNT architectures), which load "
        "without genolm.",
    )
    publish.add_argument("checkpoint", help="genolm checkpoint folder")
    publish.add_argument("out_dir", help="folder to write")
    publish.add_argument("--format", dest="output_format", choices=["genolm", "esm"], default="genolm")
    publish.add_argument("--repo-id", default=None, help="user/name on the Hugging Face Hub")
    publish.add_argument("--push", action="store_true", help="upload the folder to --repo-id")
    publish.add_argument("--private", action="store_true", help="create the Hub repository as private")
    publish.add_argument(
        "--license",
        default="apache-2.0",
        help="licence id for the card (default: apache-2.0; match your training data)",
    )
    publish.add_argument("--datasets", type=_comma_list, default=[], help="comma-separated dataset ids")
    publish.add_argument("--tags", type=_comma_list, default=[], help="comma-separated extra tags")
    publish.add_argument("--training-config", default=None, help="YAML/JSON training configuration to report")
    publish.add_argument("--metrics", default=None, help="JSON evaluation results to report")
    publish.set_defaults(func=_run_publish)


def add_make_task_parser(data_subparsers: argparse._SubParsersAction) -> None:
    """Register ``make-task`` on the ``genolm data`` sub-subcommands."""
    task = data_subparsers.add_parser(
        "make-task",
        help="build a labelled fine-tuning set (splice sites, promoters, per-base annotation) from a GFF3",
        description="Derive train/validation/test tables from a genome and its GFF3 annotation (1-based "
        "closed). Writes OUT/{train,validation,test}.parquet (or .csv) and OUT/task.json (schema, label "
        "names, counts). Table coordinates seq_id/start/end are 0-based half-open; regions on the command "
        "line are 'chr' or 'chr:start-end', 1-based closed.",
    )
    task.add_argument("--fasta", required=True, help="genome FASTA (record ids as in GFF3 column 1)")
    task.add_argument("--gff3", required=True, help="annotation GFF3")
    task.add_argument("--task", required=True, choices=["splice_sites", "promoters", "cds_tokens"])
    task.add_argument("out", help="output folder")
    task.add_argument(
        "--window", type=int, default=None, help="window length in bp (splice_sites: 400, cds_tokens: 6000)"
    )
    task.add_argument(
        "--stride", type=int, default=None, help="cds_tokens: step between windows (default: window)"
    )
    task.add_argument(
        "--sites",
        choices=["both", "donor", "acceptor"],
        default="both",
        help="splice_sites: 3 classes, or donor / acceptor vs none",
    )
    task.add_argument("--canonical-only", action="store_true", help="splice_sites: only GT/GC...AG introns")
    task.add_argument("--upstream", type=int, default=250, help="promoters: bp before the TSS (default: 250)")
    task.add_argument(
        "--downstream", type=int, default=50, help="promoters: bp from the TSS on (default: 50)"
    )
    task.add_argument("--negatives-per-positive", type=float, default=1.0)
    task.add_argument("--regions", type=_comma_list, default=[], help="keep only rows inside these regions")
    task.add_argument("--test-chromosomes", type=_comma_list, default=[])
    task.add_argument("--validation-chromosomes", type=_comma_list, default=[])
    task.add_argument("--test-regions", type=_comma_list, default=[])
    task.add_argument("--validation-regions", type=_comma_list, default=[])
    task.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="without held-out chromosomes/regions: share of rows held out as blocks of genes",
    )
    task.add_argument("--validation-fraction", type=float, default=0.1)
    task.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="smallest span of a held-out block of genes (default: 10 windows)",
    )
    task.add_argument("--seed", type=int, default=0)
    task.add_argument("--format", dest="file_format", choices=["parquet", "csv"], default="parquet")
    task.set_defaults(func=_run_make_task)


def _run_embed(args: argparse.Namespace) -> int:
    from .embed import embed_fasta

    embeddings = embed_fasta(
        args.model,
        args.fasta,
        args.out,
        pool=args.pool,
        layer=args.layer,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
        device=args.device,
        dtype=args.dtype,
        progress=not args.no_progress,
    )
    print(f"wrote {len(embeddings)} embeddings to {args.out}")
    return 0


def _run_publish(args: argparse.Namespace) -> int:
    from .publish import publish

    out = publish(
        args.checkpoint,
        args.out_dir,
        output_format=args.output_format,
        repo_id=args.repo_id,
        push=args.push,
        private=args.private,
        license=args.license,
        datasets=args.datasets,
        tags=args.tags,
        training_config=args.training_config,
        metrics=args.metrics,
    )
    where = f" and pushed it to {args.repo_id}" if args.push else ""
    print(f"wrote {out}{where}")
    return 0


def _run_make_task(args: argparse.Namespace) -> int:
    from .data.tasks import make_task

    info = make_task(
        args.fasta,
        args.gff3,
        args.task,
        args.out,
        file_format=args.file_format,
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
    print(json.dumps(info["counts"], indent=2))
    return 0


__all__ = ["add_downstream_parsers", "add_make_task_parser"]
