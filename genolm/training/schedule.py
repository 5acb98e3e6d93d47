"""Learning-rate schedules.

NT and AgroNT were trained with Adam and a linear warm-up followed by a square-root decay (Dalla-Torre et al.
2024 and Mendoza-Revilla et al. 2024, Methods: the rate rises linearly from ``5e-5`` to ``1e-4`` over the first
16,000 updates, then decays as ``1 / sqrt(step)``). :func:`lr_at` implements that schedule, with the
start, peak and warm-up length as parameters, plus cosine / linear / constant decays for comparison.
"""

from __future__ import annotations

import math

import torch

DECAYS = ("sqrt", "cosine", "linear", "constant")


def lr_at(
    step: int,
    lr: float,
    warmup_steps: int,
    init_lr: float = 0.0,
    decay: str = "sqrt",
    max_steps: int | None = None,
    min_lr: float = 0.0,
) -> float:
    """Learning rate at optimizer step ``step`` (0-based: the rate used by the first update is ``lr_at(0)``).

    Args:
        step: number of optimizer updates done so far.
        lr: peak learning rate, reached at the end of warm-up.
        warmup_steps: updates of the linear warm-up from ``init_lr`` to ``lr``.
        init_lr: rate of the first update.
        decay: after warm-up, ``"sqrt"`` (``lr * sqrt(warmup_steps / step)``, NT/AgroNT), ``"cosine"`` or
            ``"linear"`` (to ``min_lr`` at ``max_steps``), or ``"constant"``.
        max_steps: length of the run (for cosine / linear).
        min_lr: floor of the decayed rate.
    """
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    if step < warmup_steps:
        return init_lr + (lr - init_lr) * step / warmup_steps
    if decay == "constant":
        return lr
    if decay == "sqrt":
        return max(min_lr, lr * math.sqrt(max(warmup_steps, 1) / max(step, 1)))
    if not max_steps or max_steps <= warmup_steps:
        return lr
    progress = min(1.0, (step - warmup_steps) / (max_steps - warmup_steps))
    if decay == "cosine":
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr + (lr - min_lr) * (1.0 - progress)


def build_scheduler(optimizer: torch.optim.Optimizer, lr: float, **schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`lr_at`; the optimizer's base rate must be ``lr``.

    ``schedule`` holds the other arguments of :func:`lr_at` (``warmup_steps``, ``init_lr``, ``decay``,
    ``max_steps``, ``min_lr``). The scheduler's ``state_dict`` is a step count, so it checkpoints exactly.
    """
    lr_at(0, lr, **schedule)  # validate the arguments now rather than at the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, lr, **schedule) / lr)


__all__ = ["DECAYS", "build_scheduler", "lr_at"]
