"""The run log (one JSON object per logging step appended to ``OUTPUT_DIR/log.jsonl``) and the throughput
meter of the training loop."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Training steps left out of throughput at the start of a run (or a resume): the first step compiles
# (torch.compile, XLA) and warms the allocator; the second may compile again once optimizer state exists.
THROUGHPUT_WARMUP_STEPS = 2


class JsonlLogger:
    """Append-only JSON-lines log, flushed and fsync'ed per line so a killed run keeps every line it wrote.

    On resume, lines from steps after the checkpoint (written before the kill) are dropped first, so the log
    reads as one uninterrupted run.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(clean) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", math.inf)
    except json.JSONDecodeError:
        return math.inf  # a line cut by the kill


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class ThroughputMeter:
    """Tokens per second of training steps, measured as torchtitan's and nanoGPT's loops do.

    The first ``warmup_steps`` steps (compilation, allocator warm-up) are not measured, and time spent inside
    :meth:`paused` (evaluation, checkpoints) is left out. :meth:`rate` covers the steps since the last
    :meth:`reset` (the loop resets after each log line). Call :meth:`rate` right after a host sync (the logged
    loss's ``.item()``), so that the device work of the window is included on asynchronous devices.
    """

    def __init__(self, warmup_steps: int = THROUGHPUT_WARMUP_STEPS, clock: Callable[[], float] = time.perf_counter):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.clock = clock
        self.steps = 0  # steps seen, warm-up included
        self._start: float | None = None
        self._tokens = 0
        self._measured_steps = 0
        self._paused = 0.0
        if warmup_steps == 0:
            self.reset()

    @property
    def warming_up(self) -> bool:
        return self.steps < self.warmup_steps

    def step(self, tokens: int) -> None:
        """Record one finished training step of ``tokens`` tokens."""
        self.steps += 1
        if self.steps <= self.warmup_steps:
            if self.steps == self.warmup_steps:
                self.reset()  # the measured window starts after the last warm-up step
            return
        self._tokens += tokens
        self._measured_steps += 1

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the time of the enclosed block (evaluation, checkpoint) out of the measurement."""
        start = self.clock()
        try:
            yield
        finally:
            self._paused += self.clock() - start

    def rate(self) -> float | None:
        """Tokens per second over the measured steps of the window; None before any step was measured."""
        if self._start is None or self._measured_steps == 0:
            return None
        elapsed = self.clock() - self._start - self._paused
        return self._tokens / elapsed if elapsed > 0 else None

    def reset(self) -> None:
        """Start a new window (ignored during warm-up, whose end starts the first window)."""
        if self.warming_up:
            return
        self._start = self.clock()
        self._tokens = 0
        self._measured_steps = 0
        self._paused = 0.0


__all__ = ["THROUGHPUT_WARMUP_STEPS", "JsonlLogger", "ThroughputMeter", "read_log"]
