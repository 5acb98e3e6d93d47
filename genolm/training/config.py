"""The pretraining run configuration: a typed dataclass, read from YAML and overridden from the command line.

Every field has a default and a help text (``field(metadata={"help": ...})``), which also become the recipe's
``--help``. A YAML file in ``recipes/configs/`` is the same fields serialized; unknown keys are an error that
names the file. Command-line overrides use the field name (``--max_steps 100``); dictionary fields take dotted
keys (``--model_overrides.hidden_size 128``). Values are parsed as YAML, so ``--lr 3e-4``,
``--sources '[a.fa, b.fa]'`` and ``--resume true`` all work.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PARALLEL_CHOICES = ("auto", "none", "ddp", "fsdp", "xla_fsdp")


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


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
    # --- data ---------------------------------------------------------------------------------
    sources: list[Any] = _f([], "Genome sources (FASTA paths/URLs or manifest entries); empty = bundled example.")
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
    parallel: str = _f("auto", "none, ddp, fsdp (GPU, FSDP2), xla_fsdp (TPU SPMD FSDPv2), or auto.")
    # --- run ----------------------------------------------------------------------------------
    output_dir: str = _f("runs/pretrain", "Run folder: log.jsonl, checkpoints/, trackers.")
    seed: int = _f(0, "Seed of model initialisation, masking and data order.")
    log_every: int = _f(10, "Optimizer steps between log lines.")
    eval_every: int = _f(0, "Optimizer steps between validation passes (0: only before and after training).")
    eval_batches: int = _f(8, "Batches per validation pass (the same batches every time).")
    checkpoint_every: int = _f(500, "Optimizer steps between checkpoints (one is always written at the end).")
    keep_checkpoints: int = _f(3, "Newest checkpoints kept.")
    resume: bool = _f(False, "Continue from the newest complete checkpoint in output_dir/checkpoints.")
    report_to: str = _f("tensorboard", "Trackers through Accelerate: tensorboard, wandb, all, or none.")
    run_name: str = _f("genolm-pretrain", "Tracker project/run name.")
    fill_mask_example: bool = _f(True, "End by printing a fill-mask prediction of the trained model.")
    progress_bar: bool = _f(True, "Show a progress bar.")

    def __post_init__(self) -> None:
        if self.parallel not in PARALLEL_CHOICES:
            raise ValueError(f"parallel={self.parallel!r}; expected one of {PARALLEL_CHOICES}")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise ValueError(f"mixed_precision={self.mixed_precision!r}; expected auto, no or bf16")
        if self.report_to not in ("tensorboard", "wandb", "all", "none"):
            raise ValueError(f"report_to={self.report_to!r}; expected tensorboard, wandb, all or none")
        if isinstance(self.sparse_prediction, str) and self.sparse_prediction != "auto":
            raise ValueError(f"sparse_prediction={self.sparse_prediction!r}; expected true, false or auto")
        for name in ("batch_size", "gradient_accumulation_steps", "max_tokens", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps < 0 or self.warmup_steps < 0:
            raise ValueError("max_steps and warmup_steps must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(PretrainConfig)


def _coerce(name: str, value: Any, annotation: Any, origin: str) -> Any:
    """Check/convert a YAML value against a field annotation; the error names where the value came from."""
    args = typing.get_args(annotation)
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    options = args if is_union else (annotation,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"{origin}: {name} may not be null")
    for option in options:
        base = typing.get_origin(option) or option
        if base is type(None):
            continue
        if base is bool and isinstance(value, bool):
            return value
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is float and isinstance(value, str):
            try:  # YAML 1.1 reads "3e-4" (no dot) as a string
                return float(value)
            except ValueError:
                pass
        if base is str and isinstance(value, str):
            return value
        if base is list and isinstance(value, (list, tuple)):
            return list(value)
        if base is dict and isinstance(value, dict):
            return dict(value)
    raise ValueError(f"{origin}: {name}={value!r} does not match the type {annotation}")


def config_from_dict(values: dict[str, Any], origin: str = "config") -> PretrainConfig:
    """Build a :class:`PretrainConfig` from a mapping, rejecting unknown keys and mistyped values."""
    types_ = _field_types()
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ValueError(f"{origin}: unknown key(s) {', '.join(unknown)}; see `recipes/pretrain.py --help`")
    return PretrainConfig(**{k: _coerce(k, v, types_[k], origin) for k, v in values.items()})


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of config keys at the top level")
    return values


def build_parser() -> argparse.ArgumentParser:
    """``--config`` plus one ``--<field>`` option per config field (help from the field's metadata)."""
    parser = argparse.ArgumentParser(
        description="Masked-language-model pretraining of a genolm model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file of config keys (recipes/configs/*.yaml).")
    for f in dataclasses.fields(PretrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": f"{f.metadata['help']} (default: {default!r})"}
        if f.name == "parallel":
            kwargs["choices"] = PARALLEL_CHOICES
        if f.type in (bool, "bool"):
            kwargs.update(nargs="?", const="true")  # a bare --resume means --resume true
        parser.add_argument(f"--{f.name}", metavar="VALUE", **kwargs)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> PretrainConfig:
    """Defaults < ``--config`` YAML < command-line overrides.

    Besides the declared options, ``--<dict_field>.<key> VALUE`` sets one entry of a dictionary field.
    A bare ``--resume`` (no value) means ``--resume true``.
    """
    argv = list(argv) if argv is not None else None
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    values: dict[str, Any] = load_yaml(args.config) if args.config else {}
    origin = args.config or "config"
    types_ = _field_types()
    for name, raw in vars(args).items():
        if name == "config":
            continue
        values[name] = yaml.safe_load(raw) if isinstance(raw, str) and types_[name] is not str else raw
    i = 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or "." not in item:
            parser.error(f"unrecognized argument {item!r}")
        key, _, inline = item[2:].partition("=")
        if not inline:
            if i + 1 >= len(extra):
                parser.error(f"{item} needs a value")
            inline, i = extra[i + 1], i + 1
        top, _, sub = key.partition(".")
        if top not in types_ or typing.get_origin(types_[top]) is not dict and types_[top] is not dict:
            parser.error(f"--{key}: {top!r} is not a dictionary field of the config")
        values.setdefault(top, {})
        values[top] = {**values[top], sub: yaml.safe_load(inline)}
        i += 1
    return config_from_dict(values, origin=f"{origin} + command line")


def dump_yaml(config: PretrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


__all__ = ["PARALLEL_CHOICES", "PretrainConfig", "build_parser", "config_from_dict", "dump_yaml", "load_yaml", "parse_config"]
