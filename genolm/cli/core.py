"""Core commands: ``genolm convert``, ``genolm info`` and ``genolm export``."""

from __future__ import annotations

import argparse
import json

from genolm.cli.options import add_overwrite_option, add_quiet_option, apply_quiet_option


def convert_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``genolm convert``: checkpoints between genolm and transformers' ESM format."""
    parser = subparsers.add_parser(
        "convert",
        help="convert checkpoints between genolm and transformers' ESM format (NT v1 / AgroNT)",
        description="Convert Hugging Face checkpoint folders. The result is saved only if it reproduces the "
        "source model's logits on real sequence.",
    )
    parser.add_argument("direction", choices=["esm-to-genolm", "genolm-to-esm"])
    parser.add_argument("src", help="source checkpoint folder")
    parser.add_argument("dst", help="destination folder (created)")
    parser.add_argument("--no-verify", action="store_true", help="skip the logits comparison")
    add_overwrite_option(parser, "DST")
    add_quiet_option(parser)
    parser.set_defaults(func=run_convert)
    return parser


def info_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``genolm info``: what a checkpoint holds."""
    parser = subparsers.add_parser("info", help="print architecture, size, vocabulary and context of a checkpoint")
    parser.add_argument("path", help="checkpoint folder (genolm or ESM format)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_info)
    return parser


def export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``genolm export``: a training checkpoint as a Hugging Face model folder."""
    parser = subparsers.add_parser(
        "export",
        help="consolidate a (sharded) pretraining checkpoint into a Hugging Face model folder",
        description="Write a recipes/pretrain.py checkpoint (checkpoints/step-N) as a Hugging Face model folder "
        "(model.safetensors, config.json, tokenizer files) that from_pretrained loads. A sharded checkpoint "
        "(its dcp/ folder, written by every process of the run) is consolidated on the CPU in this one process: "
        "it needs the memory of the full model, not of the optimizer state.",
    )
    parser.add_argument("checkpoint", help="checkpoint folder (OUTPUT_DIR/checkpoints/step-N)")
    parser.add_argument("output", help="output model folder (created)")
    add_overwrite_option(parser, "OUTPUT")
    add_quiet_option(parser)
    parser.set_defaults(func=run_export)
    return parser


def run_export(args: argparse.Namespace) -> int:
    from genolm.training.checkpoint import export_checkpoint

    apply_quiet_option(args)
    export_checkpoint(args.checkpoint, args.output, overwrite=args.overwrite)
    if not args.quiet:
        print(f"wrote {args.output} (from {args.checkpoint})")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from genolm.convert import esm_to_genolm, genolm_to_esm

    apply_quiet_option(args)
    convert = esm_to_genolm if args.direction == "esm-to-genolm" else genolm_to_esm
    model = convert(args.src, args.dst, verify=not args.no_verify, overwrite=args.overwrite)
    if not args.quiet:
        print(f"wrote {type(model).__name__} to {args.dst}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from genolm.info import checkpoint_info, format_info

    info = checkpoint_info(args.path)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
