"""Stop a training run whose loss or gradient norm stops being finite, before any of that state is saved.

A diverged step (too high a learning rate, bad data, an overflow) makes the loss or the gradient norm NaN or
infinite, and every later weight update spreads it. :class:`FiniteGuard` records, on the device and without a
host synchronisation, the first optimizer step whose loss or gradient norm was not finite; :meth:`check` reads
that record back once (one host sync) and raises :class:`TrainingDivergedError`. The recipes call ``check`` at
each logging step and before every checkpoint or best-model snapshot, so nothing of a diverged step is saved
and the checkpoints of earlier good steps stay.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import UserError


class TrainingDivergedError(UserError):
    """The loss or the gradient norm of an optimizer step was NaN or infinite."""


class FiniteGuard:
    """The first optimizer step with a non-finite loss or gradient norm, kept on the device.

    Args:
        device: where the losses live.
        step: optimizer steps already done (a resumed run starts from its checkpoint's step).
        hint: what the message suggests (e.g. a lower ``--lr``).
    """

    def __init__(self, device: torch.device | str, step: int = 0, hint: str = "") -> None:
        self.hint = hint
        # Tensors, not Python numbers, so that the per-step update is the same graph every step (XLA).
        self._step = torch.tensor(step, dtype=torch.int64, device=device)
        self._first_bad = torch.tensor(-1, dtype=torch.int64, device=device)
        self._loss = torch.zeros((), dtype=torch.float32, device=device)
        self._grad_norm = torch.zeros((), dtype=torch.float32, device=device)

    @torch.no_grad()
    def update(self, loss: torch.Tensor, grad_norm: torch.Tensor | float | None = None) -> None:
        """Record one optimizer step's ``loss`` (mean over its micro-batches or the last one) and gradient norm.

        Device operations only: no host synchronisation.
        """
        self._step += 1
        loss = loss.detach().float().reshape(())
        norm = (
            torch.as_tensor(grad_norm, dtype=torch.float32, device=loss.device).detach().float().reshape(())
            if grad_norm is not None
            else torch.zeros((), device=loss.device)
        )
        bad = ~(torch.isfinite(loss) & torch.isfinite(norm))
        first = bad & (self._first_bad < 0)
        self._first_bad = torch.where(first, self._step, self._first_bad)
        self._loss = torch.where(first, loss, self._loss)
        self._grad_norm = torch.where(first, norm, self._grad_norm)

    def check(self, before: str = "", reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Raise :class:`TrainingDivergedError` if any recorded step was not finite (one host sync).

        ``before`` names what the check protects (``"the checkpoint of step 500"``); ``reduce`` (the mean over
        processes) makes every process see a divergence seen by any one, so they all stop together.
        """
        bad = (self._first_bad >= 0).float()
        if reduce is not None:
            bad = reduce(bad)
        if float(bad) == 0.0:  # host sync
            return
        step = int(self._first_bad)
        if step < 0:  # another process diverged
            raise TrainingDivergedError(
                "training diverged: the loss or gradient norm became NaN or infinite on another process"
                + (f"; stopped before {before}" if before else "")
                + (f"; {self.hint}" if self.hint else "")
            )
        loss, norm = float(self._loss), float(self._grad_norm)
        raise TrainingDivergedError(
            f"training diverged at step {step}: loss {_number(loss)}, gradient norm {_number(norm)}"
            + (f"; stopped before {before}" if before else "")
            + (f"; {self.hint}" if self.hint else "")
        )


def _number(value: float) -> str:
    return str(value) if not math.isfinite(value) else f"{value:.4g}"


def check_finite_weights(state_dict: dict[str, torch.Tensor], where: str) -> None:
    """Raise :class:`TrainingDivergedError` naming the first parameter of ``state_dict`` with a NaN or infinite
    value (``where`` says what was about to be written)."""
    for name, tensor in state_dict.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingDivergedError(
                f"{where}: parameter {name!r} holds NaN or infinite values; not saved (training diverged; "
                "try a lower --lr)"
            )


__all__ = ["FiniteGuard", "TrainingDivergedError", "check_finite_weights"]
