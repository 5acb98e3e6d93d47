"""Fine-tune a genolm model on labelled sequences: classification, regression, multi-label, per-nucleotide.

    python recipes/finetune.py --config recipes/configs/finetune_debug.yaml
    accelerate launch recipes/finetune.py --model CKPT_OR_HUB_ID --task classification \
        --train train.csv --validation val.csv --test test.csv --output_dir runs/polya --peft ia3 --lr 1e-3

Every field of ``genolm.finetune.FinetuneConfig`` is a flag (``--help`` lists them); a ``--config`` YAML sets
many at once and flags override it. The flags shared with ``recipes/pretrain.py`` mean the same thing
(``--max_steps``, ``--output_dir``, ``--seed``, ``--lr`` / ``--learning_rate``, ``--batch_size``, ...).

Reads top to bottom: config, data, model (+ adapters), optimizer, the loop with validation passes and early
stopping, then the best weights are restored, scored on validation and test, and saved. Outputs in
``output_dir``:

    config.yaml                          the resolved settings (reload with --config)
    log.jsonl                            training and validation log lines
    metrics.json                         validation and test metrics of the best checkpoint, best step, sizes
    predictions_{validation,test}.parquet  per record (or per nucleotide) labels, predictions, probabilities
    model/                               best weights as a plain checkpoint + tokenizer (PEFT: merged)
    adapter/                             PEFT only: the best adapter (peft format) + tokenizer

Distribution: one process, or data parallel under ``accelerate launch`` (DDP); validation outputs are
gathered from every process.

A step whose loss or gradient norm is NaN or infinite stops the run before the next validation (nothing is
saved); that and every mistake in the settings or the tables (labels, sequences) end in one line,
``finetune.py: error: ...``, and exit code 2 (``accelerate launch`` adds its own traceback unless given
``--quiet``).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from genolm.errors import ConfigError, run_reporting_user_errors
from genolm.finetune import (
    Collator,
    EncodedDataset,
    FinetuneConfig,
    LabelSpec,
    apply_peft,
    build_model,
    count_parameters,
    default_metric,
    encode_split,
    load_base_config,
    load_records,
    load_tokenizer,
    merge_adapters,
    peft_config,
    predict,
    resolve_checkpoint,
    score,
    split_validation,
)
from genolm.finetune.metrics import json_safe
from genolm.recipe_config import config_from_args, save_yaml
from genolm.training.flops import flops_per_token, gpu_kind, peak_flops
from genolm.training.guards import FiniteGuard
from genolm.training.metrics import JsonlLogger
from genolm.training.schedule import build_scheduler


def finetune(cfg: FinetuneConfig) -> dict:
    """Run the recipe; returns what ``metrics.json`` holds."""
    # -- runtime --------------------------------------------------------------------------------------------
    mixed_precision = cfg.mixed_precision
    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() else "no"
    log_with = {"none": None, "all": ["tensorboard", "wandb"]}.get(cfg.report_to, [cfg.report_to])
    out = Path(cfg.output_dir)
    # cpu=True without a GPU: Accelerate then sets up multi-process CPU runs (gloo) under torchrun / launch
    accelerator = Accelerator(
        mixed_precision=mixed_precision, log_with=log_with, project_dir=str(out), cpu=not torch.cuda.is_available()
    )
    is_main = accelerator.is_main_process
    set_seed(cfg.seed)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")
    log = JsonlLogger(out / "log.jsonl") if is_main else None
    if log_with and is_main:
        accelerator.init_trackers("genolm-finetune", config={k: str(v) for k, v in vars(cfg).items()})

    # -- tokenizer, context and data ------------------------------------------------------------------------
    with accelerator.main_process_first():  # download / convert once
        checkpoint = resolve_checkpoint(cfg.model, out)
    base_config = load_base_config(checkpoint, cfg.model)
    tokenizer = load_tokenizer(cfg.tokenizer, checkpoint, base_config)
    max_length = cfg.max_length or base_config.max_tokens
    if max_length > base_config.max_tokens:
        raise ConfigError(
            f"max_length={max_length} exceeds the model's context of {base_config.max_tokens} tokens"
        )

    read = dict(
        sequence_column=cfg.sequence_column,
        label_columns=cfg.label_columns,
        labels_file=cfg.labels_file,
        id_column=cfg.id_column,
        task=cfg.task,
    )
    records = {"train": load_records(cfg.train, **read)}
    if cfg.validation:
        records["validation"] = load_records(cfg.validation, **read)
    else:
        records["train"], records["validation"] = split_validation(
            records["train"], cfg.validation_fraction, cfg.seed
        )
    if cfg.test:
        records["test"] = load_records(cfg.test, **read)
    for name, limit in (
        ("train", cfg.max_train_samples),
        ("validation", cfg.max_eval_samples),
        ("test", cfg.max_eval_samples),
    ):
        if limit is not None and name in records and len(records[name]) > limit:
            records[name] = records[name].subset(range(limit))
    spec = LabelSpec.fit(cfg.task, records["train"], cfg.class_names)
    splits = {
        name: encode_split(
            r, spec, tokenizer, max_length, cfg.long_sequences, cfg.window_stride, cfg.per_nucleotide
        )
        for name, r in records.items()
    }
    for name, split in splits.items():
        accelerator.print(
            f"{name}: {split.n_records} records -> {len(split)} inputs, {split.n_tokens} tokens "
            f"(longest {split.longest_tokens}, max_length {max_length}, {split.n_truncated} truncated)"
        )
    accelerator.print(
        f"task {cfg.task}: {spec.num_labels} {'outputs' if cfg.task in ('regression', 'multilabel') else 'classes'}"
    )

    # -- model and adapters ---------------------------------------------------------------------------------
    model = build_model(
        cfg.task, spec, checkpoint, cfg.model, cfg.pooling, cfg.per_nucleotide, cfg.classifier_dropout
    )
    if cfg.peft != "none":
        model = apply_peft(
            model,
            peft_config(
                cfg.peft,
                cfg.task,
                cfg.target_modules,
                cfg.feedforward_modules,
                cfg.lora_r,
                cfg.lora_alpha,
                cfg.lora_dropout,
            ),
        )
    trainable, total = count_parameters(model)
    accelerator.print(f"model {cfg.model} ({cfg.peft}): {trainable:,} trainable of {total:,} parameters")

    # -- optimizer, data loaders, schedule ------------------------------------------------------------------
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)  # biases, LayerNorms, IA3 vectors
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
    )
    collator = Collator(tokenizer.pad_token_id)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(
        EncodedDataset(splits["train"]),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=collator,
        num_workers=cfg.num_workers,
    )
    eval_loaders = {
        name: DataLoader(
            EncodedDataset(split, with_window=True),
            batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
            collate_fn=collator,
            num_workers=cfg.num_workers,
        )
        for name, split in splits.items()
        if name != "train"
    }
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    eval_loaders = {name: accelerator.prepare(loader) for name, loader in eval_loaders.items()}
    accum = cfg.gradient_accumulation_steps
    max_steps = cfg.max_steps
    if cfg.epochs is not None:
        max_steps = max(1, math.ceil(cfg.epochs * len(train_loader) / accum))
    # Stepped once per optimizer step by hand (Accelerate's scheduler wrapper would step once per process).
    scheduler = build_scheduler(
        optimizer,
        cfg.lr,
        warmup_steps=cfg.warmup_steps,
        init_lr=cfg.init_lr,
        decay=cfg.decay,
        max_steps=max_steps,
        min_lr=cfg.min_lr,
    )
    metric_name = cfg.metric_for_best or default_metric(cfg.task)
    greater_is_better = metric_name != "loss"

    # Throughput: model FLOPs of the encoder (no LM head); adapters skip the frozen weights' gradients, so a
    # PEFT step is ~2 forward passes instead of 3 (PaLM appendix B accounting, see genolm.training.flops).
    passes = 3 if cfg.peft == "none" else 2
    device = accelerator.device
    device_kind = gpu_kind(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu"
    peak = peak_flops(device_kind) if device_kind else None
    accelerator.print(
        f"{max_steps} steps of {cfg.batch_size} x {accum} x {accelerator.num_processes} sequences, "
        f"lr {cfg.lr} ({cfg.decay}), validation every {cfg.eval_every} steps on {metric_name}, "
        f"{mixed_precision} on {device}"
    )

    # -- training loop --------------------------------------------------------------------------------------
    def evaluate(name: str) -> tuple[dict, object]:
        outputs = predict(model, eval_loaders[name], splits[name], cfg.task, accelerator)
        return score(splits[name], spec, outputs, cfg.window_pooling)

    def summary(metrics: dict) -> str:
        return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))

    def better(value: float | None, best: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        if best is None:
            return True
        return value > best + cfg.min_delta if greater_is_better else value < best - cfg.min_delta

    def trainable_state() -> dict[str, torch.Tensor]:
        unwrapped = accelerator.unwrap_model(model)
        return {
            n: p.detach().to("cpu", copy=True) for n, p in unwrapped.named_parameters() if p.requires_grad
        }

    best_value, best_step, best_state, waited, stopped_early = None, 0, trainable_state(), 0, False
    best_validation = None  # (metrics, predictions) of the best step
    model.train()
    batches = iter(train_loader)
    step, started = 0, time.perf_counter()
    window_start, window_flops = time.perf_counter(), 0.0
    window_loss = torch.zeros((), device=device)
    window_tokens = torch.zeros((), device=device)
    guard = FiniteGuard(device, hint=f"try a lower --lr (now {cfg.lr:g})")

    def check_finite(before: str = "") -> None:  # host sync: call only at logging and validation steps
        guard.check(before, reduce=lambda flag: accelerator.reduce(flag, "mean"))

    while step < max_steps:
        for micro in range(accum):
            try:
                batch = next(batches)
            except StopIteration:  # next epoch (a new shuffle)
                batches = iter(train_loader)
                batch = next(batches)
            sync = micro == accum - 1
            context = (
                accelerator.no_sync(model)
                if not sync and accelerator.num_processes > 1
                else contextlib.nullcontext()
            )
            with context:
                loss = model(**batch).loss / accum
                accelerator.backward(loss)
            window_loss += loss.detach()
            window_tokens += batch["attention_mask"].sum()
            rows, length = batch["input_ids"].shape
            window_flops += passes * rows * length * flops_per_token(base_config, length, 0.0, training=False)
        # max_norm inf: no clipping, but the norm is still computed for the divergence check
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or math.inf)
        # fp16 loss scaling makes inf gradient norms on purpose (those steps are skipped): loss only then
        guard.update(loss, None if mixed_precision == "fp16" else grad_norm)  # device only
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        if step % cfg.log_every == 0 or step == max_steps:
            check_finite()
            elapsed = time.perf_counter() - window_start
            steps_in_window = (step - 1) % cfg.log_every + 1
            # host sync: the loss and token counts accumulated on the device since the last log line
            loss_value = accelerator.reduce(window_loss, "mean").item() / steps_in_window
            tokens_per_s = window_tokens.item() / elapsed
            mfu = window_flops / elapsed / peak if peak else None
            if is_main:
                record = {
                    "step": step,
                    "loss": loss_value,
                    "lr": scheduler.get_last_lr()[0],
                    "tokens_per_s_per_device": tokens_per_s,
                }
                if mfu is not None:
                    record["mfu"] = mfu
                log.write(record)
                accelerator.log(record, step=step)
            accelerator.print(
                f"step {step}/{max_steps}: loss {loss_value:.4f}, lr {scheduler.get_last_lr()[0]:.3g}, "
                f"{tokens_per_s:,.0f} tokens/s/device" + (f", MFU {mfu:.2%}" if mfu is not None else "")
            )
            window_start, window_flops = time.perf_counter(), 0.0
            window_loss.zero_()
            window_tokens.zero_()

        if step % cfg.eval_every == 0 or step == max_steps:
            check_finite(f"the validation of step {step}")  # a diverged model is never the best one
            metrics, table = evaluate("validation")
            if is_main:
                log.write(
                    {"step": step, **{f"val/{k}": v for k, v in metrics.items() if not isinstance(v, dict)}}
                )
            accelerator.print(f"step {step}: validation {summary(metrics)}")
            if metric_name not in metrics:
                raise ConfigError(
                    f"metric_for_best={metric_name!r} is not one of the {cfg.task} metrics: {sorted(metrics)}"
                )
            value = metrics[metric_name]
            if better(value, best_value):
                best_value, best_step, best_state, waited = value, step, trainable_state(), 0
                best_validation = (metrics, table)
            else:
                waited += 1
                if cfg.patience and waited >= cfg.patience:
                    accelerator.print(
                        f"early stop at step {step}: no {metric_name} gain in {waited} validations"
                    )
                    stopped_early = True
                    break
    train_seconds = time.perf_counter() - started

    # -- best checkpoint: restore, score, save --------------------------------------------------------------
    unwrapped = accelerator.unwrap_model(model)
    parameters = dict(unwrapped.named_parameters())
    with torch.no_grad():
        for name, value in best_state.items():
            parameters[name].copy_(value)
    results: dict = {
        "task": cfg.task,
        "model": cfg.model,
        "peft": cfg.peft,
        "metric_for_best": metric_name,
        "best_step": best_step,
        "best_value": best_value,
        "steps": step,
        "stopped_early": stopped_early,
        "train_seconds": train_seconds,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "label_names": spec.names,
        "max_length": max_length,
        "long_sequences": cfg.long_sequences,
    }
    for name in eval_loaders:
        # validation: as scored at the best step (no validation improved at all: the initial weights, scored now)
        metrics, table = best_validation if name == "validation" and best_validation else evaluate(name)
        results[name] = metrics
        if is_main and cfg.save_predictions:
            table.to_parquet(out / f"predictions_{name}.parquet", index=False)
        accelerator.print(f"best (step {best_step}) {name}: {summary(metrics)}")

    accelerator.wait_for_everyone()
    full_state = accelerator.get_state_dict(model) if cfg.peft == "none" else None  # every process takes part
    if is_main:
        if cfg.peft != "none":
            unwrapped.save_pretrained(out / "adapter")
            tokenizer.save_pretrained(out / "adapter")
            if cfg.merge_peft:
                # merging is checked on a few validation inputs: the logits must not change
                items = [
                    EncodedDataset(splits["validation"])[i] for i in range(min(4, len(splits["validation"])))
                ]
                example = {
                    k: v.to(device)
                    for k, v in collator(items).items()
                    if k in ("input_ids", "attention_mask")
                }
                merged = merge_adapters(unwrapped, example)
                merged.save_pretrained(out / "model")
                tokenizer.save_pretrained(out / "model")
        else:
            unwrapped.save_pretrained(out / "model", state_dict=full_state)
            tokenizer.save_pretrained(out / "model")
        (out / "metrics.json").write_text(json.dumps(json_safe(results), indent=2) + "\n")
    accelerator.end_training()
    return json_safe(results)


def main(argv: list[str] | None = None) -> dict:
    cfg = config_from_args(FinetuneConfig, argv, description=__doc__.strip().splitlines()[0])
    return finetune(cfg)


if __name__ == "__main__":
    sys.exit(run_reporting_user_errors(Path(sys.argv[0]).name, lambda: main(sys.argv[1:])))
