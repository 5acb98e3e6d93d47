"""Settings of the fine-tuning recipe (``recipes/finetune.py``); ``recipes/configs/finetune_*.yaml`` are these
fields serialised, and every field is also a command-line flag (see :mod:`genolm.recipe_config`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError
from ..recipe_config import option
from ..training.config import check_fraction, check_non_negative, check_positive

TASKS = ("classification", "regression", "multilabel", "token_classification")


@dataclass
class FinetuneConfig:
    """Fine-tune a genolm model on labelled sequences (classification, regression, multi-label, per-nucleotide)."""

    # --- model --------------------------------------------------------------------------------------------
    model: str = option(
        "preset:tiny",
        "checkpoint folder or Hub id (genolm, or ESM format such as NT / AgroNT, converted on the fly); "
        "'preset:NAME' starts from random weights of a GenoLMConfig preset",
    )
    tokenizer: str | None = option(
        None,
        "tokenizer folder or Hub id (default: the model's own, else one matching its vocab_layout and k)",
    )
    task: Literal["classification", "regression", "multilabel", "token_classification"] = option(
        "classification", "what the labels are"
    )
    pooling: Literal["cls", "mean"] | None = option(
        None, "pooling of token states for sequence-level heads (default: the checkpoint's config)"
    )
    per_nucleotide: bool = option(
        True, "token_classification: predict each nucleotide of every k-mer token (else one label per token)"
    )
    classifier_dropout: float | None = option(None, "dropout in the task head (default: the checkpoint's)")

    # --- data ---------------------------------------------------------------------------------------------
    train: str = option(
        "", "training data: CSV/TSV/Parquet/JSONL with a sequence column, or FASTA + labels_file"
    )
    validation: str | None = option(
        None, "validation data (early stopping, best checkpoint); default: validation_fraction of train"
    )
    test: str | None = option(None, "test data, scored once with the best checkpoint")
    labels_file: str | None = option(
        None, "label table for FASTA inputs, keyed by record id (column id_column); shared by all splits"
    )
    id_column: str = option("id", "record-id column of labels_file (also used as the id in predictions)")
    sequence_column: str = option("sequence", "column holding the DNA sequence")
    label_columns: list[str] | None = option(
        None,
        "label column(s); default 'label', else 'labels'. Several columns give multi-label or multi-output "
        "regression; a 'labels' cell may hold a list",
    )
    class_names: list[str] | None = option(
        None, "names of classes 0..C-1 (integer labels) or the order of named classes; saved as id2label "
        "(default: label_names of the task.json beside train, as written by genolm data make-task)"
    )
    validation_fraction: float = option(0.1, "share of train held out for validation when none is given")
    max_train_samples: int | None = option(None, "use the first N training records (quick runs)")
    max_eval_samples: int | None = option(None, "use the first N validation and test records (quick runs)")

    # --- long sequences -----------------------------------------------------------------------------------
    max_length: int | None = option(None, "tokens per input, <cls> included (default: the model's context)")
    long_sequences: Literal["truncate", "windows"] = option(
        "truncate",
        "records longer than max_length: keep the first max_length tokens (with a warning), or cut them into "
        "windows whose predictions are pooled per record",
    )
    window_stride: int | None = option(
        None, "nucleotides between window starts (default: half a window, so windows overlap by half)"
    )
    window_pooling: Literal["mean", "max"] = option("mean", "how window logits combine into a record's")

    # --- parameter-efficient fine-tuning ------------------------------------------------------------------
    peft: Literal["none", "lora", "ia3"] = option(
        "none", "full fine-tuning, LoRA, or IA3 (the AgroNT choice); the task head is always trained"
    )
    target_modules: list[str] | None = option(
        None,
        "PEFT target module names (suffixes, or one regex); default LoRA: query,key,value,output,up,down; "
        "IA3: key,value,down",
    )
    feedforward_modules: list[str] | None = option(
        None, "IA3 modules scaled on their input (a subset of target_modules); default: down"
    )
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: float = option(16.0, "LoRA scaling numerator (scale = lora_alpha / lora_r)")
    lora_dropout: float = option(0.05, "dropout on the LoRA branch input")
    merge_peft: bool = option(True, "also save the best model with adapters merged, as a plain checkpoint")

    # --- optimisation -------------------------------------------------------------------------------------
    output_dir: str = option("runs/finetune", "where checkpoints, metrics.json and predictions go")
    overwrite: bool = option(
        False, "replace the run already in output_dir (its log, metrics, predictions, model/ and adapter/)"
    )
    seed: int = option(0, "seed of the head initialisation, the validation split and data order")
    max_steps: int = option(1000, "optimizer steps (upper bound when early stopping)")
    epochs: float | None = option(None, "if set, train this many passes over the data instead of max_steps")
    batch_size: int = option(16, "sequences (or windows) per device per micro-batch")
    eval_batch_size: int | None = option(None, "per-device batch at evaluation (default: 2 x batch_size)")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    lr: float = option(
        1e-4, "peak learning rate (adapters take larger ones, ~1e-3)", aliases=("learning_rate",)
    )
    init_lr: float = option(0.0, "learning rate of the first step (start of the linear warm-up)")
    warmup_steps: int = option(0, "linear warm-up steps")
    decay: Literal["sqrt", "cosine", "linear", "constant"] = option(
        "linear", "decay after warm-up (see genolm.training.schedule)"
    )
    min_lr: float = option(0.0, "floor of the decayed learning rate")
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and LayerNorms)")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_eps: float = option(1e-8, "AdamW epsilon")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: no clipping)")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = option(
        "auto", "autocast dtype; auto: bf16 on GPU/TPU, fp32 on CPU (fp16: none and ddp only)"
    )
    report_to: Literal["none", "tensorboard", "wandb", "all"] = option("none", "Accelerate trackers")
    parallel: Literal["auto", "none", "ddp", "fsdp", "xla_fsdp"] = option(
        "auto",
        "runtime, as in pretraining: none, ddp, fsdp (FSDP2 over torchrun / accelerate launch processes), "
        "xla_fsdp (torch-xla SPMD FSDPv2, TPU), or auto (see genolm.parallel.resolve_backend)",
    )
    compile: bool = option(
        False, "torch.compile each transformer layer (CPU/GPU; XLA compiles anyway); costs compile time at start"
    )
    length_buckets: bool = option(
        True, "batch inputs of similar length together (less padding); off under XLA's static shapes"
    )

    # --- evaluation and early stopping --------------------------------------------------------------------
    eval_every: int = option(100, "optimizer steps between validation passes (and one at the end)")
    metric_for_best: str | None = option(
        None,
        "validation metric that picks the best checkpoint (default: mcc for classification and "
        "token_classification, r2 for regression, auprc_macro for multilabel; 'loss' is minimised)",
    )
    patience: int = option(5, "stop after this many validation passes without improvement (0: never stop)")
    min_delta: float = option(0.0, "smallest change of metric_for_best that counts as improvement")
    log_every: int = option(10, "optimizer steps between training log lines")
    num_workers: int = option(0, "DataLoader worker processes")
    save_predictions: bool = option(True, "write predictions_{validation,test}.parquet")

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise ConfigError(message)

        if self.task not in TASKS:
            fail(f"task must be one of {TASKS}, got {self.task!r}")
        if not self.train:
            fail("no training data: set train (a table or FASTA file)")
        if not 0.0 < self.validation_fraction < 1.0:
            fail(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        for name in ("batch_size", "gradient_accumulation_steps", "eval_every", "log_every", "lora_r"):
            if getattr(self, name) < 1:
                fail(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_train_samples", "max_eval_samples", "eval_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                fail(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "patience", "num_workers"):
            if getattr(self, name) < 0:
                fail(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_length is not None and self.max_length < 2:
            fail(f"max_length must be >= 2 (<cls> and one token), got {self.max_length}")
        if self.window_stride is not None and self.window_stride < 1:
            fail(f"window_stride must be >= 1, got {self.window_stride}")
        if self.epochs is None and self.max_steps < 1:
            fail(f"max_steps must be >= 1 (or set epochs), got {self.max_steps}")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            fail(f"epochs must be a finite number > 0, got {self.epochs}")
        check_positive(self, "lr", "adam_eps", "lora_alpha")
        check_non_negative(self, "init_lr", "min_lr", "weight_decay", "max_grad_norm", "min_delta")
        check_fraction(self, "adam_beta1", "adam_beta2", "lora_dropout")
        if self.classifier_dropout is not None:
            check_fraction(self, "classifier_dropout")
        if self.peft == "ia3" and self.feedforward_modules and self.target_modules:
            missing = set(self.feedforward_modules) - set(self.target_modules)
            if missing:
                fail(f"feedforward_modules {sorted(missing)} are not in target_modules")


def default_metric(task: str) -> str:
    """Validation metric that selects the best checkpoint by default."""
    return {"regression": "r2", "multilabel": "auprc_macro"}.get(task, "mcc")
