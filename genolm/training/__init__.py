"""Pretraining building blocks used by ``recipes/pretrain.py``: MLM batches and loss, learning-rate
schedule, resumable batch streams, atomic checkpoints, FLOPs/MFU accounting and evaluation.

Distribution (DDP, FSDP, torch-xla SPMD) lives in :mod:`genolm.parallel`, not here.
"""

from .checkpoint import (
    checkpoint_problem,
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
from .metrics import JsonlLogger
from .mlm import IGNORE_INDEX, MLMCollator, mlm_loss
from .schedule import build_scheduler, lr_at
from .stream import BatchStream, fixed_batches

__all__ = [
    "IGNORE_INDEX",
    "PEAK_FLOPS",
    "BatchStream",
    "JsonlLogger",
    "MLMCollator",
    "PretrainConfig",
    "build_scheduler",
    "checkpoint_problem",
    "evaluate",
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
