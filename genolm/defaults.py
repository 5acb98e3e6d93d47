"""Default settings shared by the library functions and the ``genolm`` command line.

The library functions use these constants as their keyword defaults and the command line reads them for its
option defaults, so the two cannot drift apart. This module imports nothing: the command line builds its
parser from it before torch is loaded.
"""

from __future__ import annotations

# Where and in which precision a model runs (resolved when the model is loaded).
DEVICE = "auto"  # the first CUDA device if there is one, else the CPU
DTYPE = "auto"  # float32: scores reproducible to ~1e-6
DTYPES = ("auto", "float32", "bfloat16", "float16")
# torch.compile the model's layers for inference: off, since on CPU the compile time (tens of seconds)
# outweighs the gain of a run (see benchmarks/vep.py, which reports both).
COMPILE = False

# Windows per forward pass of each command.
EMBED_BATCH_SIZE = 8
VEP_BATCH_SIZE = 32
ISM_BATCH_SIZE = 32
ANNOTATE_BATCH_SIZE = 8

# genolm data prepare: sequence tokens per window (without <cls>) and files per genome and split.
PREPARE_MAX_TOKENS = 1000
PREPARE_NUM_SHARDS = 16

# A split with fewer rows than this (one default batch) is warned about by make-task and prepare.
SMALL_SPLIT_ROWS = 16

__all__ = [
    "ANNOTATE_BATCH_SIZE",
    "COMPILE",
    "DEVICE",
    "DTYPE",
    "DTYPES",
    "EMBED_BATCH_SIZE",
    "ISM_BATCH_SIZE",
    "PREPARE_MAX_TOKENS",
    "PREPARE_NUM_SHARDS",
    "SMALL_SPLIT_ROWS",
    "VEP_BATCH_SIZE",
]
