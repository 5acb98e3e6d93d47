"""Pretraining building blocks used by ``recipes/pretrain.py``: MLM batches and loss, learning-rate
schedule, resumable batch streams, atomic checkpoints, the divergence guard, FLOPs/MFU accounting and evaluation.

Distribution (DDP, FSDP, torch-xla SPMD) lives in :mod:`genolm.parallel`, not here.
"""

from .checkpoint import (
    checkpoint_problem,
    file_sha256,
    latest_checkpoint,
    list_checkpoints,
    load_training_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import PretrainConfig, parse_config
from .evaluate import evaluate, fill_mask_example
from .flops import PEAK_FLOPS, flops_per_token, mfu, peak_flops
from .guards import FiniteGuard, TrainingDivergedError, check_finite_weights
from .metrics import JsonlLogger
from .mlm import IGNORE_INDEX, MLMCollator, mlm_loss
from .schedule import build_scheduler, lr_at
from .stream import BatchStream, fixed_batches

__all__ = [
    "IGNORE_INDEX",
    "PEAK_FLOPS",
    "BatchStream",
    "FiniteGuard",
    "JsonlLogger",
    "MLMCollator",
    "PretrainConfig",
    "TrainingDivergedError",
    "build_scheduler",
    "check_finite_weights",
    "checkpoint_problem",
    "evaluate",
    "file_sha256",
    "fill_mask_example",
    "fixed_batches",
    "flops_per_token",
    "latest_checkpoint",
    "list_checkpoints",
    "load_training_state",
    "lr_at",
    "mfu",
    "mlm_loss",
    "parse_config",
    "peak_flops",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
