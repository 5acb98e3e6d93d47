"""What genolm reports to the user, and how.

A mistake in the user's input, settings or paths raises :class:`UserError` (or a subclass). The ``genolm``
command line and the recipes print it as one line, ``PROG: error: MESSAGE``, and exit with code 2. Every other
exception is a bug in genolm and keeps its traceback (exit code 1). Messages name the file, line, record or
field and say what is wrong.

This module imports nothing heavy: the command line uses it before torch is loaded.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import Any

USER_ERROR_EXIT = 2


class UserError(ValueError):
    """A mistake in the user's input, settings or paths: reported as one line, exit code 2.

    Subclasses ``ValueError`` so that library callers who catch ``ValueError`` keep working.
    """


class ConfigError(UserError):
    """A bad configuration value or key (YAML, ``--key value`` override, model override)."""


class InputDataError(UserError):
    """Bad content in an input file (table, VCF, GFF3, checkpoint); the message names file and line/field."""


class OutputPathError(UserError):
    """An output path that cannot be used: it is an input, lies under a file, or is held by another run."""


def format_user_error(prog: str, err: BaseException) -> str:
    """The one line printed for a user's error."""
    return f"{prog}: error: {' '.join(str(err).split())}"


def run_reporting_user_errors(prog: str, func: Callable[[], Any]) -> int:
    """Call ``func``; a :class:`UserError` or a full disk becomes one line on stderr and a non-zero code.

    Returns ``func``'s integer result (0 for ``None``), :data:`USER_ERROR_EXIT` for a user's error, 1 for a full
    disk. Any other exception propagates with its traceback: it is a bug in genolm.
    """
    try:
        result = func()
    except UserError as err:
        print(format_user_error(prog, err), file=sys.stderr)
        return USER_ERROR_EXIT
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {err.filename}" if err.filename else ""
            print(f"{prog}: error: no space left on the device{where}; nothing was left at the output path",
                  file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


__all__ = [
    "USER_ERROR_EXIT",
    "ConfigError",
    "InputDataError",
    "OutputPathError",
    "UserError",
    "format_user_error",
    "run_reporting_user_errors",
]
