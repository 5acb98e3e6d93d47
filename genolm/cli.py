"""The ``genolm`` command line: one subcommand per task, each a thin wrapper around a library function.

Coordinates on the command line follow the file formats they come from and are stated in each help text
(VCF and GFF3 are 1-based closed; BED and genolm's Python API are 0-based half-open).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subsystems that add subcommands: (module, function taking the subparsers object).
SUBCOMMANDS: list[tuple[str, str]] = [
    ("genolm.commands", "add_core_parsers"),
    ("genolm.data.cli", "add_data_parser"),
    ("genolm.downstream_cli", "add_downstream_parsers"),
    ("genolm.inference.cli", "add_inference_parsers"),
]


def build_parser() -> argparse.ArgumentParser:
    """The full ``genolm`` argument parser."""
    from genolm import __version__

    parser = argparse.ArgumentParser(
        prog="genolm",
        description="Genomic language models for plant genomes (Nucleotide Transformer / AgroNT family).",
    )
    parser.add_argument("--version", action="version", version=f"genolm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name, function_name in SUBCOMMANDS:
        getattr(importlib.import_module(module_name), function_name)(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genolm`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # Input errors: a one-line message naming the file/record, no traceback.
        print(f"genolm {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
