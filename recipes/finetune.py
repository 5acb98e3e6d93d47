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

A folder that holds another run (any of these) is refused unless ``--overwrite`` (which removes them first); a
lock file keeps a second run out while one is running. Each output is written under a temporary name and
renamed when complete.

Distribution: the runtime of ``recipes/pretrain.py`` (``genolm.parallel``; ``--parallel``): one process, data
parallel (DDP) or FSDP2 under ``torchrun`` / ``accelerate launch``, or torch-xla SPMD FSDPv2 on TPUs (batches
padded to ``max_length``); validation outputs are gathered from every process.

    torchrun --nproc_per_node 8 recipes/finetune.py --config CONFIG --parallel fsdp
    PJRT_DEVICE=TPU python recipes/finetune.py --config CONFIG --parallel xla_fsdp

A step whose loss or gradient norm is NaN or infinite stops the run before the next validation (nothing is
saved); that and every mistake in the settings or the tables (labels, sequences) end in one line,
``finetune.py: error: ...``, and exit code 2 (``accelerate launch`` adds its own traceback unless given
``--quiet``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
from accelerate.utils import set_seed

from genolm import parallel
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
    task_class_names,
)
from genolm.finetune.metrics import json_safe
from genolm.outputs import atomic_file, atomic_folder, claim_run_folder
from genolm.recipe_config import config_from_args, save_yaml
from genolm.training.flops import flops_per_token, peak_flops
from genolm.training.guards import FiniteGuard
from genolm.training.metrics import JsonlLogger
from genolm.training.optim import build_optimizer
from genolm.training.schedule import build_scheduler


def finetune(cfg: FinetuneConfig) -> dict:
    """Run the recipe; returns what ``metrics.json`` holds."""
    # -- runtime --------------------------------------------------------------------------------------------
    out = Path(cfg.output_dir)
    backend = parallel.resolve_backend(cfg.parallel)
    rt = parallel.setup(backend, cfg.mixed_precision, project_dir=str(out), report_to=cfg.report_to)
    is_main, say = rt.is_main_process, rt.print
    set_seed(cfg.seed)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = JsonlLogger(out / "log.jsonl") if is_main else None
    rt.init_trackers("genolm-finetune", {k: str(v) for k, v in vars(cfg).items()})

    # -- tokenizer, context and data ------------------------------------------------------------------------
    with rt.main_process_first():  # download / convert once
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
    spec = LabelSpec.fit(cfg.task, records["train"], task_class_names(cfg.train, cfg.task, cfg.class_names))
    splits = {
        name: encode_split(
            r, spec, tokenizer, max_length, cfg.long_sequences, cfg.window_stride, cfg.per_nucleotide
        )
        for name, r in records.items()
    }
    for name, split in splits.items():
        say(
            f"{name}: {split.n_records} records -> {len(split)} inputs, {split.n_tokens} tokens "
            f"(longest {split.longest_tokens}, max_length {max_length}, {split.n_truncated} truncated)"
        )
    say(
        f"task {cfg.task}: {spec.num_labels} {'outputs' if cfg.task in ('regression', 'multilabel') else 'classes'}"
    )
    if is_main:  # saved once the data is read and checked: a run stopped by bad data leaves no run behind
        save_yaml(cfg, out / "config.yaml")

    # -- model and adapters ---------------------------------------------------------------------------------
    if cfg.peft != "none" and rt.shards_parameters:
        raise ConfigError(
            f"peft={cfg.peft} with parallel={rt.backend}: adapters are trained unsharded; use parallel ddp or none"
        )
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
    say(f"model {cfg.model} ({cfg.peft}): {trainable:,} trainable of {total:,} parameters")

    # -- optimizer, data loaders, schedule ------------------------------------------------------------------
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    model, optimizer = rt.prepare(
        model, lambda m: build_optimizer(m, cfg.lr, cfg.weight_decay, betas, cfg.adam_eps), compile=cfg.compile
    )
    # Batches on the device, each process its share; with static shapes (XLA) every batch is max_length long.
    # With length_buckets, batches group inputs of similar length (less padding work).
    def input_lengths(split) -> list[int] | None:
        return [len(ids) for ids in split.input_ids] if cfg.length_buckets else None

    collator = Collator(tokenizer.pad_token_id, pad_to_multiple_of=max_length if rt.static_shapes else None)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = rt.data_loader(
        EncodedDataset(splits["train"]),
        cfg.batch_size,
        collator,
        train=True,
        generator=generator,
        num_workers=cfg.num_workers,
        lengths=input_lengths(splits["train"]),
    )
    if len(train_loader) == 0:
        raise ConfigError(
            f"{len(splits['train'])} training inputs make no full batch of batch_size={cfg.batch_size} "
            f"x {rt.local_devices} devices"
        )
    eval_loaders = {
        name: rt.data_loader(
            EncodedDataset(split, with_window=True),
            cfg.eval_batch_size or 2 * cfg.batch_size,
            collator,
            num_workers=cfg.num_workers,
            lengths=input_lengths(split),  # outputs are placed by their window index, so order is free
        )
        for name, split in splits.items()
        if name != "train"
    }
    accum = cfg.gradient_accumulation_steps
    max_steps = cfg.max_steps
    if cfg.epochs is not None:
        max_steps = max(1, math.ceil(cfg.epochs * len(train_loader) / accum))
    # Stepped once per optimizer step.
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
    device = rt.device
    peak = peak_flops(rt.device_kind) if rt.device_kind else None
    peak_devices = 1 if rt.device_kind == "cpu" else rt.local_devices  # virtual XLA CPU devices share one CPU
    say(
        f"{max_steps} steps of {cfg.batch_size} x {accum} x {rt.num_devices} sequences, "
        f"lr {cfg.lr} ({cfg.decay}), validation every {cfg.eval_every} steps (best by {metric_name}), "
        f"mixed precision {rt.mixed_precision}, on {rt.num_devices} x {rt.device_kind or device.type} "
        f"(backend {rt.backend})"
    )

    # -- training loop --------------------------------------------------------------------------------------
    def evaluate(name: str) -> tuple[dict, object]:
        outputs = predict(model, eval_loaders[name], splits[name], cfg.task, rt)
        return score(splits[name], spec, outputs, cfg.window_pooling)

    def summary(metrics: dict) -> str:
        return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))

    def better(value: float | None, best: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        if best is None:
            return True
        return value > best + cfg.min_delta if greater_is_better else value < best - cfg.min_delta

    best_value, best_step, best_state, waited, stopped_early = None, 0, rt.trainable_state(model), 0, False
    best_validation = None  # (metrics, predictions) of the best step
    model.train()
    batches = iter(train_loader)
    step, started = 0, time.perf_counter()
    window_start, window_flops = time.perf_counter(), 0.0
    window_loss = torch.zeros((), device=device)
    window_tokens = torch.zeros((), device=device)
    guard = FiniteGuard(device, hint=f"try a lower --lr (now {cfg.lr:g})")

    def check_finite(before: str = "") -> None:  # host sync: call only at logging and validation steps
        guard.check(before, reduce=rt.reduce_mean)

    while step < max_steps:
        for micro in range(accum):
            try:
                batch = next(batches)
            except StopIteration:  # next epoch (a new shuffle)
                batches = iter(train_loader)
                batch = next(batches)
            with rt.no_sync(model, sync=micro == accum - 1):  # gradients reduced at the last micro-batch
                with rt.autocast():
                    loss = model(**batch).loss / accum
                rt.backward(loss)
            window_loss += loss.detach()
            window_tokens += batch["attention_mask"].sum()
            rows, length = batch["input_ids"].shape
            window_flops += passes * rows * length * flops_per_token(base_config, length, 0.0, training=False)
        # max_norm inf: no clipping, but the norm is still computed for the divergence check
        grad_norm = rt.clip_grad_norm(model, cfg.max_grad_norm or math.inf)
        # fp16 loss scaling makes inf gradient norms on purpose (those steps are skipped): loss only then
        guard.update(loss, None if rt.mixed_precision == "fp16" else grad_norm)  # device only
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        rt.step_end()  # XLA: the step's graph is cut and executed here
        step += 1

        if step % cfg.log_every == 0 or step == max_steps:
            check_finite()
            elapsed = time.perf_counter() - window_start
            steps_in_window = (step - 1) % cfg.log_every + 1
            # host sync: the loss and token counts accumulated on the device since the last log line
            loss_value = rt.reduce_mean(window_loss).item() / steps_in_window
            tokens_per_s = window_tokens.item() / elapsed / rt.local_devices  # this process feeds local_devices
            mfu = window_flops / elapsed / (peak * peak_devices) if peak else None
            if is_main:
                record = {
                    "step": step,
                    "loss": loss_value,
                    "lr": scheduler.get_last_lr()[0],
                    "tokens_per_s_per_device": tokens_per_s,
                }
                if mfu is not None:
                    record["mfu"] = mfu
                if rt.compile_count() is not None:  # graph compilers (XLA): recompilations show here
                    record["xla_compiles"] = rt.compile_count()
                log.write(record)
                rt.log(record, step)
            say(
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
            say(f"step {step}: validation {summary(metrics)}")
            if metric_name not in metrics:
                raise ConfigError(
                    f"metric_for_best={metric_name!r} is not one of the {cfg.task} metrics: {sorted(metrics)}"
                )
            value = metrics[metric_name]
            if better(value, best_value):
                best_value, best_step, best_state, waited = value, step, rt.trainable_state(model), 0
                best_validation = (metrics, table)
            else:
                waited += 1
                if cfg.patience and waited >= cfg.patience:
                    say(
                        f"early stop at step {step}: no {metric_name} gain in {waited} validations"
                    )
                    stopped_early = True
                    break
    train_seconds = time.perf_counter() - started

    # -- best checkpoint: restore, score, save --------------------------------------------------------------
    rt.load_trainable_state(model, best_state)
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
            with atomic_file(out / f"predictions_{name}.parquet") as tmp:
                table.to_parquet(tmp, index=False)
        say(f"best (step {best_step}) {name}: {summary(metrics)}")

    rt.wait_for_everyone()
    full_state = rt.model_state_dict(model) if cfg.peft == "none" else None  # every process takes part
    unwrapped = rt.unwrap(model)
    if is_main:
        if cfg.peft != "none":
            with atomic_folder(out / "adapter", overwrite=True) as tmp:
                unwrapped.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
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
                with atomic_folder(out / "model", overwrite=True) as tmp:
                    merged.save_pretrained(tmp)
                    tokenizer.save_pretrained(tmp)
        else:
            with atomic_folder(out / "model", overwrite=True) as tmp:
                unwrapped.save_pretrained(tmp, state_dict=full_state)
                tokenizer.save_pretrained(tmp)
        with atomic_file(out / "metrics.json") as tmp:  # written last: its presence means the run finished
            tmp.write_text(json.dumps(json_safe(results), indent=2) + "\n")
    rt.end()
    return json_safe(results)


RUN_ENTRIES = (
    "config.yaml", "log.jsonl", "metrics.json", "predictions_validation.parquet", "predictions_test.parquet",
    "model", "adapter",
)  # what makes output_dir hold a run


def main(argv: list[str] | None = None) -> dict:
    cfg = config_from_args(FinetuneConfig, argv, description=__doc__.strip().splitlines()[0])
    inputs = {"model": cfg.model, "train": cfg.train, "validation": cfg.validation, "test": cfg.test}
    with claim_run_folder(cfg.output_dir, entries=RUN_ENTRIES, overwrite=cfg.overwrite, inputs=inputs):
        return finetune(cfg)


if __name__ == "__main__":
    sys.exit(run_reporting_user_errors(Path(sys.argv[0]).name, lambda: main(sys.argv[1:])))
