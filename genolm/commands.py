"""Core subcommands: ``genolm convert`` and ``genolm info``."""

from __future__ import annotations

import argparse
import json


def add_core_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``convert`` and ``info`` on the ``genolm`` parser."""
    convert = subparsers.add_parser(
        "convert",
        help="convert checkpoints between genolm and transformers' ESM format (NT v1 / AgroNT)",
        description="Convert Hugging Face checkpoint folders. The result is saved only if it reproduces the "
        "source model's logits on real sequence.",
    )
    convert.add_argument("direction", choices=["esm-to-genolm", "genolm-to-esm"])
    convert.add_argument("src", help="source checkpoint folder")
    convert.add_argument("dst", help="destination folder (created)")
    convert.add_argument("--no-verify", action="store_true", help="skip the logits comparison")
    convert.set_defaults(func=_run_convert)

    info = subparsers.add_parser("info", help="print architecture, size, vocabulary and context of a checkpoint")
    info.add_argument("path", help="checkpoint folder (genolm or ESM format)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=_run_info)


def _run_convert(args: argparse.Namespace) -> int:
    from .convert import esm_to_genolm, genolm_to_esm

    convert = esm_to_genolm if args.direction == "esm-to-genolm" else genolm_to_esm
    model = convert(args.src, args.dst, verify=not args.no_verify)
    print(f"wrote {type(model).__name__} to {args.dst}")
    return 0


def _run_info(args: argparse.Namespace) -> int:
    from .info import checkpoint_info, format_info

    info = checkpoint_info(args.path)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
