"""The pretraining run configuration: a typed dataclass, read from YAML and overridden from the command line.

Every field has a default and a help text (:func:`genolm.recipe_config.option`), which also become the recipe's
``--help``; reading, type checking and overriding are those of :mod:`genolm.recipe_config`. A YAML file in
``recipes/configs/`` is the same fields serialized; unknown keys are an error that names the file. Command-line
overrides use the field name (``--max_steps 100``); dictionary fields take dotted keys
(``--model_overrides.hidden_size 128``). Values are converted to the field's type, so ``--lr 3e-4``,
``--sources '[a.fa, b.fa]'``, ``--resume true`` and ``--sparse_prediction false`` all work.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import recipe_config
from ..errors import ConfigError
from ..recipe_config import option as _f
from .schedule import DECAYS

Parallel = Literal["auto", "none", "ddp", "fsdp", "xla_fsdp"]
PARALLEL_CHOICES = typing.get_args(Parallel)


@dataclass
class PretrainConfig:
    """Masked-language-model pretraining of a genolm model (NT / AgroNT recipe)."""

    # --- model --------------------------------------------------------------------------------
    model: str = _f("tiny", "GenoLMConfig preset to build (tiny, agront-1b, nt-v2-500m, ...).")
    model_overrides: dict[str, Any] = _f({}, "GenoLMConfig fields that override the preset.")
    init_from: str | None = _f(None, "Start from the weights of this Hugging Face checkpoint instead of random.")
    gradient_checkpointing: bool = _f(False, "Recompute layer activations in the backward pass (less memory).")
    attn_implementation: str = _f("sdpa", "Attention backend: sdpa or eager.")
    sparse_prediction: str | bool = _f(
        "auto", "Run the LM head only at masked positions: true, false, or auto (on except under XLA)."
    )
    compile: bool = _f(
        False, "torch.compile each transformer layer (CPU/GPU; XLA compiles anyway). Costs compile time at start."
    )
    # --- data ---------------------------------------------------------------------------------
    sources: list[Any] = _f(
        [],
        "Genome sources (FASTA paths/URLs or manifest entries), or one `genolm data prepare` shard folder "
        "(run with its max_tokens); empty = bundled example.",
    )
    max_tokens: int = _f(1000, "Sequence tokens per window; the model sees max_tokens + 1 with <cls> (1000 = 6 kb).")
    stride: int | None = _f(None, "Tokens between window starts (None: non-overlapping windows).")
    data_options: dict[str, Any] = _f(
        {},
        "Keyword arguments of genolm.data.genome_dataset for both splits (validation_fraction, block_size, "
        "shuffle, reverse_complement, softmask, include, exclude, ...).",
    )
    shuffle_buffer: int = _f(0, "Extra shuffle buffer of windows on top of genome_dataset's (0: none).")
    # --- masking ------------------------------------------------------------------------------
    mlm_probability: float = _f(0.15, "Fraction of non-special tokens selected for prediction.")
    mask_replace_prob: float = _f(0.8, "Fraction of selected tokens replaced by <mask>.")
    random_replace_prob: float = _f(0.1, "Fraction of selected tokens replaced by a random token.")
    soft_mask_weight: float = _f(1.0, "Loss weight of soft-masked (lower-case) tokens; 1.0 = no down-weighting.")
    # --- optimisation -------------------------------------------------------------------------
    batch_size: int = _f(8, "Sequences per device per micro-batch.")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step.")
    max_steps: int = _f(1000, "Optimizer steps to train for.")
    lr: float = _f(1e-4, "Peak learning rate (after warm-up).")
    init_lr: float = _f(5e-5, "Learning rate of the first step (start of the linear warm-up).")
    warmup_steps: int = _f(16000, "Linear warm-up steps.")
    decay: str = _f("sqrt", "Decay after warm-up: sqrt (NT/AgroNT), cosine, linear or constant.")
    min_lr: float = _f(0.0, "Floor of the decayed learning rate.")
    weight_decay: float = _f(0.1, "AdamW weight decay (not applied to biases and LayerNorm weights).")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.999, "AdamW beta2.")
    adam_eps: float = _f(1e-8, "AdamW epsilon.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0: no clipping; the norm is still logged).")
    mixed_precision: str = _f("auto", "no, bf16, or auto (bf16 on GPU/TPU, fp32 on CPU).")
    # --- distribution -------------------------------------------------------------------------
    parallel: Parallel = _f("auto", "none, ddp, fsdp (GPU, FSDP2), xla_fsdp (TPU SPMD FSDPv2), or auto.")
    memory_limit_gib: float | None = _f(
        None,
        "Memory per device (GiB) that the memory plan printed at start must fit in, else the run stops before "
        "building the model (default: the device's memory; on the CPU the host's available memory); 0: no check.",
    )
    tensor_parallel: int = _f(
        1, "Devices each layer's matrices are split over (Megatron-style, fsdp and xla_fsdp); 1: none."
    )
    # --- run ----------------------------------------------------------------------------------
    output_dir: str = _f("runs/pretrain", "Run folder: log.jsonl, checkpoints/, trackers.")
    seed: int = _f(0, "Seed of model initialisation, masking and data order.")
    log_every: int = _f(10, "Optimizer steps between log lines.")
    eval_every: int = _f(0, "Optimizer steps between validation passes (0: only before and after training).")
    eval_batches: int = _f(8, "Batches per validation pass (the same batches every time).")
    checkpoint_every: int = _f(500, "Optimizer steps between checkpoints (one is always written at the end).")
    keep_checkpoints: int = _f(3, "Newest checkpoints kept.")
    checkpoint_format: str = _f(
        "auto",
        "consolidated (one process gathers and writes the model and optimizer), sharded (every process writes "
        "its shards with torch.distributed.checkpoint; `genolm export` consolidates one), or auto (sharded when "
        "parameters are sharded or several processes train).",
    )
    checkpoint_async: bool = _f(
        False, "Write sharded checkpoints in the background while training goes on (not under xla_fsdp)."
    )
    resume: bool = _f(False, "Continue from the newest complete checkpoint in output_dir/checkpoints.")
    overwrite: bool = _f(
        False, "Replace the run in output_dir: remove its log.jsonl and checkpoints/ before starting."
    )
    report_to: str = _f("tensorboard", "Trackers through Accelerate: tensorboard, wandb, all, or none.")
    run_name: str = _f("genolm-pretrain", "Tracker project/run name.")
    fill_mask_example: bool = _f(True, "End by printing a fill-mask prediction of the trained model.")
    progress_bar: bool = _f(True, "Show a progress bar.")

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise ConfigError(message)

        if self.parallel not in PARALLEL_CHOICES:
            fail(f"parallel={self.parallel!r}; expected one of {PARALLEL_CHOICES}")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            fail(f"mixed_precision={self.mixed_precision!r}; expected auto, no or bf16")
        if self.report_to not in ("tensorboard", "wandb", "all", "none"):
            fail(f"report_to={self.report_to!r}; expected tensorboard, wandb, all or none")
        if self.checkpoint_format not in ("auto", "sharded", "consolidated"):
            fail(f"checkpoint_format={self.checkpoint_format!r}; expected auto, sharded or consolidated")
        if self.decay not in DECAYS:
            fail(f"decay={self.decay!r}; expected one of {', '.join(DECAYS)}")
        if isinstance(self.sparse_prediction, str) and self.sparse_prediction != "auto":
            fail(f"sparse_prediction={self.sparse_prediction!r}; expected true, false or auto")
        for name in (
            "batch_size", "gradient_accumulation_steps", "max_steps", "max_tokens", "log_every", "keep_checkpoints",
            "tensor_parallel",
        ):
            if getattr(self, name) < 1:
                fail(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "eval_batches", "checkpoint_every", "shuffle_buffer"):
            if getattr(self, name) < 0:
                fail(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.stride is not None and self.stride < 1:
            fail(f"stride must be >= 1, got {self.stride}")
        check_positive(self, "lr", "adam_eps")
        check_non_negative(self, "init_lr", "min_lr", "weight_decay", "max_grad_norm", "soft_mask_weight")
        if self.memory_limit_gib is not None:
            check_non_negative(self, "memory_limit_gib")
        check_fraction(self, "mlm_probability", "mask_replace_prob", "random_replace_prob", "adam_beta1", "adam_beta2")
        if self.mlm_probability == 0:
            fail("mlm_probability must be > 0 (no token would be predicted), got 0")
        if self.mask_replace_prob + self.random_replace_prob > 1:
            fail(
                f"mask_replace_prob + random_replace_prob must be <= 1, got {self.mask_replace_prob} + "
                f"{self.random_replace_prob}"
            )
        check_model_overrides(self.model_overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_positive(cfg: Any, *names: str) -> None:
    """:class:`ConfigError` unless each named field of ``cfg`` is a finite number > 0."""
    for name in names:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a finite number > 0, got {value}")


def check_non_negative(cfg: Any, *names: str) -> None:
    """:class:`ConfigError` unless each named field of ``cfg`` is a finite number >= 0."""
    for name in names:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {value}")


def check_fraction(cfg: Any, *names: str) -> None:
    """:class:`ConfigError` unless each named field of ``cfg`` lies in [0, 1]."""
    for name in names:
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:  # also false for NaN
            raise ConfigError(f"{name} must be in [0, 1], got {value}")


def model_config_fields() -> set[str]:
    """Names a ``GenoLMConfig`` accepts: its own arguments and the common ``PretrainedConfig`` attributes."""
    import inspect

    from transformers import PretrainedConfig

    from ..configuration_genolm import GenoLMConfig

    own = set(inspect.signature(GenoLMConfig.__init__).parameters) - {"self", "kwargs"}
    common = set(PretrainedConfig().to_dict()) | set(GenoLMConfig().to_dict())
    return (own | common) - {"transformers_version", "model_type"}


def check_model_overrides(overrides: dict[str, Any]) -> None:
    """:class:`ConfigError` naming the first key of ``model_overrides`` that is not a ``GenoLMConfig`` field,
    with the closest valid name."""
    if not overrides:
        return
    valid = model_config_fields()
    for key in overrides:
        if key not in valid:
            close = difflib.get_close_matches(str(key), sorted(valid), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"model_overrides: {key!r} is not a GenoLMConfig field{hint}")


def config_from_dict(values: dict[str, Any], origin: str = "config") -> PretrainConfig:
    """Build a :class:`PretrainConfig` from a mapping, rejecting unknown keys and mistyped values."""
    return recipe_config.config_from_dict(PretrainConfig, values, origin)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The typed field values of a YAML config file (unknown keys and wrong types name the file)."""
    return recipe_config.load_yaml(PretrainConfig, path)


def build_parser() -> argparse.ArgumentParser:
    """``--config`` plus one ``--<field>`` option per config field (help from the field's metadata)."""
    return recipe_config.build_parser(PretrainConfig)


def parse_config(argv: Sequence[str] | None = None) -> PretrainConfig:
    """Defaults < ``--config`` YAML < command-line overrides.

    Besides the declared options, ``--<dict_field>.<key> VALUE`` sets one entry of a dictionary field.
    A bare ``--resume`` (no value) means ``--resume true``.
    """
    return recipe_config.config_from_args(PretrainConfig, argv)


def dump_yaml(config: PretrainConfig) -> str:
    return recipe_config.dump_yaml(config)


__all__ = ["PARALLEL_CHOICES", "PretrainConfig", "build_parser", "config_from_dict", "dump_yaml", "load_yaml", "parse_config"]
