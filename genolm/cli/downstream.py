"""Commands for downstream use: ``genolm embed`` and ``genolm publish``.

Each one parses its arguments and calls a library function (:func:`genolm.embed.embed_fasta`,
:func:`genolm.publish.publish`).
"""

from __future__ import annotations

import argparse
import os

from genolm import defaults
from genolm.cli.options import (
    add_overwrite_option,
    add_quiet_option,
    add_resume_options,
    add_runtime_options,
    apply_quiet_option,
    apply_runtime_options,
    comma_list,
)


def embed_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``genolm embed``: embeddings of the records of a FASTA file."""
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
    embed.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="tokens per window including <cls> (default: the model's context)",
    )
    embed.add_argument(
        "--chunk-records",
        type=int,
        default=1000,
        help="records embedded at a time: the unit shared between processes and of --resume (default 1000)",
    )
    add_runtime_options(embed, defaults.EMBED_BATCH_SIZE)
    add_resume_options(embed)
    embed.set_defaults(func=run_embed)
    return embed


def publish_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``genolm publish``: a Hub-ready model folder."""
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
    publish.add_argument("--datasets", type=comma_list, default=[], help="comma-separated dataset ids")
    publish.add_argument("--tags", type=comma_list, default=[], help="comma-separated extra tags")
    publish.add_argument("--training-config", default=None, help="YAML/JSON training configuration to report")
    publish.add_argument("--metrics", default=None, help="JSON evaluation results to report")
    add_overwrite_option(publish, "OUT_DIR")
    add_quiet_option(publish)
    publish.set_defaults(func=run_publish)
    return publish


def run_embed(args: argparse.Namespace) -> int:
    from genolm.embed import embed_fasta

    apply_runtime_options(args)
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
        compile=args.compile,
        chunk_records=args.chunk_records,
        progress=not args.quiet,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    if not args.quiet and int(os.environ.get("RANK", "0")) == 0:  # the main process of a torchrun job
        print(f"wrote {len(embeddings)} embeddings to {args.out}")
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from genolm.publish import publish

    apply_quiet_option(args)
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
        overwrite=args.overwrite,
    )
    where = f" and pushed it to {args.repo_id}" if args.push else ""
    if not args.quiet:
        print(f"wrote {out}{where}")
    return 0
