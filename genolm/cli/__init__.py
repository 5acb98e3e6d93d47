"""The ``genolm`` command line: one subcommand per task, each a thin wrapper around a library function.

:data:`COMMANDS` is the one registry: command name -> (module, function), or for a group such as ``data``, a
registry of its own. The function adds the command's parser to the ``subparsers`` it is given and sets
``func`` (the runner) on it. Parsers import only the standard library and :mod:`genolm.defaults`; torch,
transformers and the library modules are imported inside the runner of the command that runs, so ``genolm
--help`` is instant.

Coordinates on the command line follow the file formats they come from and are stated in each help text
(VCF and GFF3 are 1-based closed; BED and genolm's Python API are 0-based half-open).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from genolm.errors import run_reporting_user_errors

# name -> (module, function) for a command, or name -> a registry of its own for a group of commands.
Registry = Mapping[str, Any]

COMMANDS: Registry = {
    "convert": ("genolm.cli.core", "convert_parser"),
    "info": ("genolm.cli.core", "info_parser"),
    "export": ("genolm.cli.core", "export_parser"),
    "plan": ("genolm.cli.plan", "plan_parser"),
    "data": {
        "manifest": ("genolm.cli.data", "manifest_parser"),
        "prepare": ("genolm.cli.data", "prepare_parser"),
        "make-task": ("genolm.cli.data", "make_task_parser"),
    },
    "embed": ("genolm.cli.downstream", "embed_parser"),
    "publish": ("genolm.cli.downstream", "publish_parser"),
    "vep": ("genolm.cli.inference", "vep_parser"),
    "ism": ("genolm.cli.inference", "ism_parser"),
    "annotate": ("genolm.cli.inference", "annotate_parser"),
}

# Help of the command groups (a group's commands bring their own).
GROUPS = {
    "data": (
        "genome manifests, pre-tokenised training shards and labelled fine-tuning sets",
        "Build genome manifests and pre-tokenised shards for pretraining, and labelled tables for fine-tuning.",
    ),
}


def command_names(registry: Registry = COMMANDS, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every runnable command as its words, e.g. ``("info",)``, ``("data", "prepare")``."""
    for name, entry in registry.items():
        if isinstance(entry, Mapping):
            yield from command_names(entry, (*prefix, name))
        else:
            yield (*prefix, name)


def _add_commands(subparsers: argparse._SubParsersAction, registry: Registry, prefix: tuple[str, ...]) -> None:
    for name, entry in registry.items():
        if isinstance(entry, Mapping):
            help_text, description = GROUPS[name]
            group = subparsers.add_parser(name, help=help_text, description=description)
            dest = "_".join((*prefix, name, "command"))
            _add_commands(
                group.add_subparsers(dest=dest, metavar=f"{name.upper()}_COMMAND", required=True),
                entry,
                (*prefix, name),
            )
        else:
            module_name, function_name = entry
            parser = getattr(importlib.import_module(module_name), function_name)(subparsers)
            parser.set_defaults(command_words=(*prefix, name))


def build_parser() -> argparse.ArgumentParser:
    """The full ``genolm`` argument parser."""
    from genolm import __version__

    parser = argparse.ArgumentParser(
        prog="genolm",
        description="Genomic language models for plant genomes (Nucleotide Transformer / AgroNT family).",
    )
    parser.add_argument("--version", action="version", version=f"genolm {__version__}")
    _add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), COMMANDS, ())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genolm`` console script; returns the process exit code.

    A user's mistake (:class:`genolm.errors.UserError`) is printed as one line ``genolm CMD: error: ...``
    with exit code 2, like argparse's own errors; any other exception is a bug and keeps its traceback.
    """
    args = build_parser().parse_args(argv)
    prog = " ".join(("genolm", *args.command_words))
    return run_reporting_user_errors(prog, lambda: args.func(args))


__all__ = ["COMMANDS", "build_parser", "command_names", "main"]
