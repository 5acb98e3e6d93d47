"""What one process needs to continue a run exactly: its data-stream position and its random generators.

Every process of a job has its own share of the training rows, its own shuffle buffer and masking generator,
and its own random generators (Python, numpy, torch, and the CUDA or XLA device generator that dropout draws
from). :func:`process_state` captures them in a plain dict of tensors, numpy arrays and containers (read back by
``torch.load(weights_only=True)``, see :func:`genolm.training.load_training_state`); a checkpoint keeps one per
process, and on resume each process gives its own to :func:`restore_process_state`.

A run resumed on another number of processes cannot continue exactly: the rows are split differently.
:func:`resume_plan` says which saved state each process takes and what is done instead (one line to print).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .checkpoint import rng_state, set_rng_state
from .stream import BatchStream


def rng_states(device: torch.device | None = None) -> dict[str, Any]:
    """The random generators of this process: Python, numpy, torch CPU and CUDA (:func:`rng_state`), and the
    XLA device's when ``device`` is an XLA device (an int seed; read after the step's graph has run)."""
    state = rng_state()
    if device is not None and device.type == "xla":
        import torch_xla.core.xla_model as xm

        state["xla"] = int(xm.get_rng_state(device))
    return state


def set_rng_states(state: Mapping[str, Any], device: torch.device | None = None) -> None:
    """Restore what :func:`rng_states` returned (the CUDA and XLA generators where saved and present)."""
    set_rng_state(state)
    if "xla" in state and device is not None and device.type == "xla":
        import torch_xla.core.xla_model as xm

        xm.set_rng_state(int(state["xla"]), device)


def process_state(stream: BatchStream, device: torch.device | None = None) -> dict[str, Any]:
    """Everything this process needs to continue exactly: ``{"stream": ..., "rng": ...}``.

    ``stream``: its position after the last batch consumed (source position, epoch, shuffle buffer and its
    generator, masking generator; :meth:`BatchStream.state_dict`). ``rng``: :func:`rng_states` on ``device``.
    Call between optimizer steps, on every process.
    """
    return {"stream": stream.state_dict(), "rng": rng_states(device)}


def restore_process_state(
    state: Mapping[str, Any], stream: BatchStream, device: torch.device | None = None, *, exact: bool = True
) -> None:
    """Continue from :func:`process_state` (before iterating ``stream``).

    ``exact=False`` (a state saved by a process of a job with another number of processes): the random
    generators are restored (the stream's shuffle and masking ones too), and ``stream`` restarts its own share
    of the rows at the beginning of the epoch the saved stream was in (see :func:`resume_plan`).
    """
    if exact:
        stream.load_state_dict(state["stream"])
    else:
        stream.restart_epoch(int(state["stream"]["epoch"]), generators=state["stream"])
    set_rng_states(state["rng"], device)


def resume_plan(saved_processes: int, process_index: int, num_processes: int) -> tuple[int, str | None]:
    """Which of ``saved_processes`` saved states process ``process_index`` restores, and, when the number of
    processes changed, the one-line warning that says what is done instead of an exact continuation (None when
    the continuation is exact). Restore with ``exact=note is None``."""
    if saved_processes < 1:
        raise ValueError("the checkpoint holds no process state")
    if saved_processes == num_processes:
        return process_index, None
    note = (
        f"warning: the checkpoint was written by {saved_processes} process(es), this run has {num_processes}: the "
        f"training rows are split differently, so the data cannot continue exactly; each process i restores the "
        f"random generators of saved process i mod {saved_processes} (masking and shuffling included) and restarts "
        f"its own share of the rows at the "
        f"beginning of the epoch that process was in (rows already trained on in that epoch are seen again)"
    )
    return process_index % saved_processes, note


__all__ = ["process_state", "restore_process_state", "resume_plan", "rng_states", "set_rng_states"]
