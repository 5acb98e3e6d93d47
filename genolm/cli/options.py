"""Options shared by several ``genolm`` commands, defined once.

Defaults come from :mod:`genolm.defaults`, the constants the library functions use as their own defaults.
Options that every command writing files should share (e.g. how an existing output is treated) belong here
too, next to :func:`add_runtime_options`.
"""

from __future__ import annotations

import argparse

from genolm import defaults


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (an argparse ``type``)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def add_runtime_options(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """``--batch-size``, ``--device``, ``--dtype``, ``--compile``, ``--threads`` and ``--quiet`` of a command that runs a model.

    ``batch_size`` is the default of the library function the command calls (a :mod:`genolm.defaults`
    constant).
    """
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"windows per forward pass (default: {batch_size})"
    )
    parser.add_argument(
        "--device",
        default=defaults.DEVICE,
        help=f"auto (the first CUDA device if there is one, else the CPU), cpu, cuda, cuda:1 ... "
        f"(default: {defaults.DEVICE})",
    )
    parser.add_argument(
        "--dtype",
        default=defaults.DTYPE,
        choices=defaults.DTYPES,
        help=f"model precision; auto = float32 (default: {defaults.DTYPE})",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=defaults.COMPILE,
        help="torch.compile the model's layers: faster batches after a compilation of tens of seconds per "
        f"input shape; pays on long runs (default: {'on' if defaults.COMPILE else 'off'})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's; 1 is often fastest for small models)",
    )
    add_quiet_option(parser)


def add_overwrite_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``: replace an existing, non-empty output folder (as a whole, once the new one is complete)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what} if it exists and is not empty (the old one is removed once the new one is "
        "complete); without it such a folder is refused before any work",
    )


def add_resume_options(parser: argparse.ArgumentParser) -> None:
    """``--resume`` and ``--overwrite`` of a command whose work is written in chunks beside ``--out``
    (``OUT.genolm-parts/``; see :mod:`genolm.inference.distributed`)."""
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from the finished chunks kept in OUT.genolm-parts/ (same inputs and "
        "options; any number of processes)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="discard the chunks of an interrupted run in OUT.genolm-parts/ and start over (without --resume "
        "or --overwrite such a folder is refused)",
    )


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bar or summary line."""
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary line")


def apply_runtime_options(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (torch's CPU threads) and ``--quiet`` (no Hugging Face progress bars either).

    Imports torch and transformers: call it in a runner only.
    """
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    apply_quiet_option(args)


def apply_quiet_option(args: argparse.Namespace) -> None:
    """``--quiet``: no Hugging Face progress bars (loading and writing weights). Imports transformers when set."""
    if args.quiet:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


__all__ = [
    "add_overwrite_option",
    "add_quiet_option",
    "add_resume_options",
    "add_runtime_options",
    "apply_quiet_option",
    "apply_runtime_options",
    "comma_list",
]
