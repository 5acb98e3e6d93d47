"""Masked-language-model pretraining of a genolm model (the Nucleotide Transformer / AgroNT recipe).

    accelerate launch recipes/pretrain.py --config recipes/configs/quickstart.yaml
    python recipes/pretrain.py --config recipes/configs/debug.yaml --max_steps 20 --output_dir runs/debug
    accelerate launch --config_file recipes/accelerate/gpu_fsdp.yaml recipes/pretrain.py \
        --config recipes/configs/nt-v2-500m.yaml
    PJRT_DEVICE=TPU python recipes/pretrain.py --config recipes/configs/agront-1b.yaml --parallel xla_fsdp

Settings come from the typed ``PretrainConfig`` (``genolm/training/config.py``; ``--help`` lists them): its
defaults, then the ``--config`` YAML, then ``--<key> VALUE`` overrides. The script reads top to bottom:
config, distribution, model, data, optimizer, resume, loop, final report. Distribution lives in
``genolm/parallel/`` (one runtime class per backend); the loop below is the same for CPU, GPUs (DDP /
FSDP2) and TPU (SPMD FSDPv2).

The run starts by printing its memory and time plan (``genolm plan``, ``genolm/training/plan.py``); a
plan that exceeds the device's memory (``memory_limit_gib`` sets another limit, 0 none) stops the run before
the model is built, with what to change.

Each logging step appends one JSON line to ``OUTPUT_DIR/log.jsonl``. Checkpoints (Hugging Face model +
tokenizer + optimizer/scheduler/RNG/data state) go to ``OUTPUT_DIR/checkpoints/step-*``: consolidated (one
process gathers and writes everything) for one process, sharded (every process writes its shards with
``torch.distributed.checkpoint``; the last checkpoint also carries the consolidated model, ``genolm export``
consolidates the others) when parameters are sharded or several processes train (``checkpoint_format``,
``checkpoint_async``). ``--resume`` continues from the newest complete one (every file checked against its
sha256), of either format and from any earlier number of processes or backend, with exactly the batches an
uninterrupted run would see. A folder that holds another run (a ``log.jsonl`` or ``checkpoints/``) is refused
unless ``--resume`` or ``--overwrite`` (which removes the old run's log and checkpoints first); a lock file
keeps a second run out while one is running. A step whose loss or gradient norm is NaN or infinite stops the
run before its checkpoint is written (the earlier ones stay); that and every mistake in the settings or
inputs end in one line, ``pretrain.py: error: ...``, and exit code 2.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMTokenizer, parallel
from genolm.errors import ConfigError, run_reporting_user_errors
from genolm.outputs import claim_run_folder
from genolm.training import (
    BatchStream,
    JsonlLogger,
    MLMCollator,
    build_scheduler,
    evaluate,
    fill_mask_example,
    fixed_batches,
    flops_per_token,
    latest_checkpoint,
    mfu,
    parse_config,
    peak_flops,
    save_checkpoint,
)
from genolm.training.checkpoint import (
    ShardedSave,
    checkpoint_format,
    is_sharded_checkpoint,
    load_checkpoint,
    save_sharded_checkpoint,
)
from genolm.training.data import build_datasets, take
from genolm.training.guards import FiniteGuard
from genolm.training.metrics import ThroughputMeter
from genolm.training.mlm import mlm_loss_sum, mlm_loss_weight
from genolm.training.optim import build_optimizer
from genolm.training.plan import plan_for_runtime
from genolm.training.resume import process_state, restore_process_state

RUN_ENTRIES = ("log.jsonl", "checkpoints")  # what makes output_dir hold a run


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(argv)
    # One run at a time in output_dir; a folder holding another run needs --resume or --overwrite.
    with claim_run_folder(
        cfg.output_dir, entries=RUN_ENTRIES, resume=cfg.resume, overwrite=cfg.overwrite,
        inputs={"init_from": cfg.init_from},
    ):
        return pretrain(cfg)


def pretrain(cfg) -> dict[str, Any]:
    # ---------------------------------------------------------------------------------------------
    # config and distribution
    # ---------------------------------------------------------------------------------------------
    transformers.utils.logging.disable_progress_bar()  # checkpoint writes would interleave with our bar
    backend = parallel.resolve_backend(cfg.parallel)
    out_dir = Path(cfg.output_dir)
    checkpoints_dir = out_dir / "checkpoints"
    rt = parallel.setup(
        backend, cfg.mixed_precision, project_dir=str(out_dir), report_to=cfg.report_to,
        tensor_parallel=cfg.tensor_parallel,
    )
    say = print if rt.is_main_process else (lambda *a, **k: None)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    resume_from = latest_checkpoint(checkpoints_dir) if cfg.resume else None
    if cfg.resume and resume_from is None:
        say(f"--resume: no complete checkpoint in {checkpoints_dir}; starting from scratch")

    # Memory plan before any weight exists (genolm/training/plan.py): a run that cannot fit stops here.
    run_plan = plan_for_runtime(cfg, rt, checkpoint=resume_from or cfg.init_from)
    if run_plan is not None:
        say(run_plan.format())
        run_plan.check()

    # ---------------------------------------------------------------------------------------------
    # model (a resume takes the architecture from the checkpoint, and its weights: from model.safetensors
    # for a consolidated checkpoint, with the optimizer state from dcp/ once sharded for a sharded one)
    # ---------------------------------------------------------------------------------------------
    load_kwargs = {"attn_implementation": cfg.attn_implementation}
    # Sharding runtimes get a model without storage and materialise it in its shards (rt.prepare).
    build_empty = torch.device("meta") if rt.shards_parameters else contextlib.nullcontext()
    if resume_from is not None and is_sharded_checkpoint(resume_from):
        model_config = GenoLMConfig.from_pretrained(resume_from)
        model_config._attn_implementation = cfg.attn_implementation
        with build_empty:  # the weights come from dcp/ once sharded
            model = GenoLMForMaskedLM(model_config)
    elif resume_from is not None:
        model = GenoLMForMaskedLM.from_pretrained(resume_from, **load_kwargs)
    elif cfg.init_from:
        model = GenoLMForMaskedLM.from_pretrained(cfg.init_from, **load_kwargs)
    else:
        model_config = GenoLMConfig.from_preset(cfg.model, **cfg.model_overrides)
        model_config._attn_implementation = cfg.attn_implementation
        with build_empty:
            model = GenoLMForMaskedLM(model_config)
    model_config = model.config
    # Projecting only the masked ~15 % of positions saves most of the LM head, but its shape depends on
    # the data, which XLA would recompile for at every step: the runtime says whether it is allowed. A forward
    # argument, never saved.
    sparse = rt.sparse_lm_head if cfg.sparse_prediction == "auto" else bool(cfg.sparse_prediction)
    if cfg.gradient_checkpointing:
        # transformers >= 5 renamed it (the old name warns); older versions have only the old one
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    seq_len = cfg.max_tokens + 1  # <cls> + window
    if seq_len > model_config.max_tokens:
        raise ConfigError(f"max_tokens={cfg.max_tokens} (+1 for <cls>) exceeds the model's {model_config.max_tokens} positions")
    tokenizer = GenoLMTokenizer(
        vocab_layout=model_config.vocab_layout, k=model_config.k, model_max_length=model_config.max_tokens
    )
    n_params = sum(p.numel() for p in model.parameters())

    # ---------------------------------------------------------------------------------------------
    # data: a resumable stream of fixed-shape masked batches, and fixed validation batches
    # ---------------------------------------------------------------------------------------------
    # batch_size is per device, whatever the mesh: a process reading its own batches feeds every device that
    # computes on them (under XLA SPMD all of its host's; under FSDP2 tensor parallelism its group's)
    host_batch = cfg.batch_size * rt.local_devices * (rt.num_processes // rt.data_parallel_size)
    train_ds, val_ds = build_datasets(cfg, tokenizer)
    masking = dict(
        mlm_probability=cfg.mlm_probability,
        mask_replace_prob=cfg.mask_replace_prob,
        random_replace_prob=cfg.random_replace_prob,
        soft_mask_weight=cfg.soft_mask_weight,
    )
    collator = MLMCollator.from_tokenizer(
        tokenizer, seq_len, vocab_size=model_config.vocab_size, seed=cfg.seed + rt.data_parallel_index, **masking
    )
    stream = BatchStream(  # the processes of a tensor-parallel group read the same batches
        train_ds, collator, host_batch, cfg.shuffle_buffer, cfg.seed + rt.data_parallel_index,
        rt.data_parallel_index, rt.data_parallel_size,
    )
    val_collator = MLMCollator.from_tokenizer(
        tokenizer, seq_len, vocab_size=model_config.vocab_size, seed=cfg.seed + 12345, **masking
    )
    val_rows = take(val_ds, cfg.eval_batches * host_batch)
    val_batches = fixed_batches(val_rows, val_collator, host_batch)
    if not val_batches:
        say(f"warning: the validation split has {len(val_rows)} windows, fewer than one batch of {host_batch}")

    # ---------------------------------------------------------------------------------------------
    # distribution, optimizer, schedule
    # ---------------------------------------------------------------------------------------------
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    model, optimizer = rt.prepare(
        model, lambda m: build_optimizer(m, cfg.lr, cfg.weight_decay, betas, cfg.adam_eps), compile=cfg.compile
    )
    scheduler = build_scheduler(
        optimizer, cfg.lr, warmup_steps=cfg.warmup_steps, init_lr=cfg.init_lr, decay=cfg.decay,
        max_steps=cfg.max_steps, min_lr=cfg.min_lr,
    )
    step, tokens_seen, val_before = 0, 0, None
    if resume_from is not None:
        # Any format, any earlier number of processes or backend (a sharded checkpoint is resharded).
        resumed = load_checkpoint(resume_from, rt, model, optimizer)
        state = resumed.trainer
        scheduler.load_state_dict(state["scheduler"])
        # Each process continues from its own data position and random generators.
        restore_process_state(resumed.process, stream, rt.device, exact=resumed.note is None)
        if resumed.note:
            say(resumed.note)
        step, tokens_seen, val_before = state["step"], state["tokens_seen"], state.get("val_before")
        say(f"resumed from {resume_from} at step {step}")

    tokens_per_step = host_batch * rt.data_parallel_size * cfg.gradient_accumulation_steps * seq_len
    flops_token = flops_per_token(model_config, seq_len, cfg.mlm_probability if sparse else 1.0)
    peak = peak_flops(rt.device_kind) if rt.device_kind else None
    # Virtual XLA CPU devices share the host's cores: a CPU run is measured against one CPU.
    peak_devices = 1 if rt.device_kind == "cpu" else rt.num_devices
    model_label = "from checkpoint" if (resume_from or cfg.init_from) else cfg.model
    if cfg.model_overrides and not (resume_from or cfg.init_from):  # not the preset's shape: say what changed
        model_label += " preset with " + ", ".join(f"{k}={v}" for k, v in cfg.model_overrides.items())
    say(
        f"genolm pretraining | backend {rt.backend} on {rt.num_devices} x {rt.device_kind or rt.device.type} "
        f"({rt.num_processes} process(es)) | precision {rt.mixed_precision}\n"
        f"model {model_label}: {n_params / 1e6:.2f} M parameters, sparse LM head {sparse}, checkpointing {cfg.gradient_checkpointing}\n"
        f"batch: {host_batch * rt.data_parallel_size} x {seq_len} tokens x {cfg.gradient_accumulation_steps} "
        f"accumulation = {tokens_per_step:,} tokens/step | {cfg.max_steps} steps | "
        f"{flops_token / 1e6:.1f} MFLOPs/token | output {out_dir}"
    )
    sharding = rt.sharding_summary(model)  # empty when parameters are not sharded
    if sharding:
        say(rt.describe_sharding(sharding))
        if rt.is_main_process:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "sharding.json").write_text(json.dumps(sharding, indent=1))

    # The main process alone owns the log (on resume it rewrites the file).
    log = JsonlLogger(out_dir / "log.jsonl", resume_step=step if resume_from is not None else None) if rt.is_main_process else None
    rt.init_trackers(cfg.run_name, cfg.to_dict())

    if val_before is None and val_batches:
        val_before = evaluate(model, val_batches, rt)
        say(f"validation before training: loss {val_before['loss']:.4f}, perplexity {val_before['perplexity']:.2f}")

    meter = ThroughputMeter()  # skips the first (compiling) steps; evaluation and checkpoints are paused

    # Sharded: every process writes its own shards (torch.distributed.checkpoint), the last checkpoint also
    # carries the consolidated weights; consolidated: the main process gathers and writes everything.
    sharded_checkpoints = checkpoint_format(
        cfg.checkpoint_format, rt.shards_parameters, rt.num_processes, rt.sharded_checkpoints_unsupported
    ) == "sharded"
    if cfg.checkpoint_async and not (sharded_checkpoints and rt.async_checkpoints):
        say(f"checkpoint_async: checkpoints are written synchronously ({'backend ' + rt.backend if sharded_checkpoints else 'consolidated format'})")
    pending: list[ShardedSave] = []  # an asynchronous save still being written

    def finish_pending() -> Path | None:
        return pending.pop().finish() if pending else None

    def save(step: int) -> Path | None:
        trainer_state = {
            "step": step,
            "tokens_seen": tokens_seen,
            "scheduler": scheduler.state_dict(),
            "val_before": val_before,
            "config": cfg.to_dict(),
            "backend": rt.backend,
        }
        # This process's own data position and random generators, read after the checkpoint's device syncs
        # (under XLA they move the device generator, and training continues from the moved one).
        own_state = functools.partial(process_state, stream, rt.device)
        if sharded_checkpoints:
            finish_pending()
            final = step == cfg.max_steps
            pending.append(save_sharded_checkpoint(
                checkpoints_dir, step, rt, model, optimizer, tokenizer=tokenizer, trainer_state=trainer_state,
                process_state=own_state, keep_last=cfg.keep_checkpoints,
                asynchronous=cfg.checkpoint_async and not final, consolidate=final,
            ))
            return None if cfg.checkpoint_async and not final else finish_pending()
        # Every process takes part (FSDP gathers shards); the main process writes.
        weights = rt.model_state_dict(model)
        optimizer_state = rt.optimizer_state_dict(model, optimizer)
        processes = rt.gather_object(own_state())  # after the weights: XLA has run the step
        path = None
        if rt.is_main_process:
            training_state = {**trainer_state, "optimizer": optimizer_state, "processes": processes}
            path = save_checkpoint(
                checkpoints_dir, step, rt.unwrap(model), tokenizer, training_state,
                model_state_dict=weights, keep_last=cfg.keep_checkpoints,
            )
        rt.wait_for_everyone()
        return path

    # ---------------------------------------------------------------------------------------------
    # training loop
    # ---------------------------------------------------------------------------------------------
    progress = None
    if cfg.progress_bar and rt.is_main_process:
        from tqdm.auto import tqdm

        progress = tqdm(total=cfg.max_steps, initial=step, desc="pretrain", dynamic_ncols=True)
    model.train()
    batches = rt.device_batches(stream)
    last_checkpoint = None
    guard = FiniteGuard(rt.device, step, hint=f"try a lower --lr (now {cfg.lr:g})")
    while step < cfg.max_steps:
        # The step's loss is the sum of its token losses over all micro-batches and processes divided by the
        # step's labelled tokens (soft-masked ones by their weight), as torchtitan's train_step: the mean over
        # every masked token of the step, whatever the micro-batches' counts.
        micro_batches = [next(batches) for _ in range(cfg.gradient_accumulation_steps)]
        step_weight = sum(mlm_loss_weight(b["labels"], b.get("loss_weights")) for b in micro_batches)
        step_weight = rt.reduce_sum(step_weight).clamp(min=1e-6)
        step_loss_sum = 0.0
        for micro, batch in enumerate(micro_batches):
            last = micro == cfg.gradient_accumulation_steps - 1
            with rt.no_sync(model, sync=last), rt.autocast():
                output = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"] if sparse else None, sparse_prediction=sparse,
                )
                loss_sum = mlm_loss_sum(output.logits, batch["labels"], batch.get("loss_weights"), sparse=sparse)
            # DDP / FSDP2 average gradients over processes: scale back to the global token mean.
            rt.backward(loss_sum * rt.gradient_replicas / step_weight)
            step_loss_sum = step_loss_sum + loss_sum.detach().float()
        grad_norm = rt.clip_grad_norm(model, cfg.max_grad_norm)
        # on the device; read back at the next logging step or checkpoint (this process's share of the step loss)
        guard.update(step_loss_sum / step_weight, grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        rt.step_end()  # XLA: the step's graph is cut and executed here
        step += 1
        meter.step(tokens_per_step)
        tokens_seen += tokens_per_step
        if progress is not None:
            progress.update(1)

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            # Host sync: the loss and the gradient norm come back from the device once per logging step
            # (with the divergence check, so no NaN is logged).
            guard.check(reduce=rt.reduce_mean)
            loss_value = (rt.reduce_sum(step_loss_sum) / step_weight).item()
            norm_value = float(grad_norm)
            tokens_per_s = meter.rate()  # None during the warm-up steps
            record = {
                "step": step,
                "loss": loss_value,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": norm_value,
                "tokens_per_s": tokens_per_s,
                "tokens_per_s_per_device": tokens_per_s / rt.num_devices if tokens_per_s else None,
                "mfu": mfu(tokens_per_s, flops_token, peak, peak_devices) if tokens_per_s else None,
                "tokens_seen": tokens_seen,
            }
            if rt.compile_count() is not None:  # graph compilers (XLA): recompilations show here
                record["xla_compiles"] = rt.compile_count()
            if cfg.eval_every and step % cfg.eval_every == 0 and val_batches:
                with meter.paused():
                    val = evaluate(model, val_batches, rt)
                record["val_loss"], record["val_perplexity"] = val["loss"], val["perplexity"]
            if rt.is_main_process:
                log.write(record)
                rt.log(record, step)
                if progress is not None:
                    progress.set_postfix(loss=f"{loss_value:.3f}", lr=f"{record['lr']:.1e}")
                else:
                    print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
            meter.reset()
        elif cfg.eval_every and step % cfg.eval_every == 0 and val_batches:
            with meter.paused():
                val = evaluate(model, val_batches, rt)
            if rt.is_main_process:
                log.write({"step": step, "val_loss": val["loss"], "val_perplexity": val["perplexity"]})

        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.max_steps:
            # Host sync: no checkpoint of a step that followed a non-finite one (the earlier ones stay).
            guard.check(f"the checkpoint of step {step}", reduce=rt.reduce_mean)
            with meter.paused():
                last_checkpoint = save(step) or last_checkpoint
    if progress is not None:
        progress.close()
    last_checkpoint = finish_pending() or last_checkpoint  # an asynchronous save not finished yet
    if last_checkpoint is None and rt.is_main_process:  # resumed a finished run
        last_checkpoint = latest_checkpoint(checkpoints_dir)

    # ---------------------------------------------------------------------------------------------
    # final report
    # ---------------------------------------------------------------------------------------------
    val_after = evaluate(model, val_batches, rt) if val_batches else None
    summary: dict[str, Any] = {"step": step, "checkpoint": str(last_checkpoint) if last_checkpoint else None}
    if val_after is not None and val_before is not None:
        summary.update(
            val_loss_before=val_before["loss"], val_loss_after=val_after["loss"],
            val_perplexity_before=val_before["perplexity"], val_perplexity_after=val_after["perplexity"],
            val_per_species_after=val_after["per_species"],
        )
        if rt.is_main_process:
            log.write({"step": step, "val_loss": val_after["loss"], "val_perplexity": val_after["perplexity"]})
            rt.log({"val_loss": val_after["loss"], "val_perplexity": val_after["perplexity"]}, step)
        say(
            f"validation perplexity: {val_before['perplexity']:.2f} before -> {val_after['perplexity']:.2f} after "
            f"(loss {val_before['loss']:.4f} -> {val_after['loss']:.4f}; a uniform guess over the "
            f"{len(collator.random_token_ids):,} tokens is {len(collator.random_token_ids):,})"
        )
        for species, value in val_after["per_species"].items():
            say(f"  {species}: loss {value:.4f}, perplexity {math.exp(value):.2f}")
    if rt.is_main_process and last_checkpoint is not None:
        say(f"checkpoint: {last_checkpoint}  (AutoModelForMaskedLM.from_pretrained after `import genolm`)")
        if cfg.fill_mask_example and val_rows:
            # The demonstration reloads the saved checkpoint on the CPU: it shows the export works too.
            trained = GenoLMForMaskedLM.from_pretrained(last_checkpoint)
            sequence = tokenizer.decode_genome(val_rows[0]["input_ids"])[:600]
            say(fill_mask_example(trained, tokenizer, sequence))
    rt.end()
    return summary


if __name__ == "__main__":
    sys.exit(run_reporting_user_errors(Path(sys.argv[0]).name, lambda: main(sys.argv[1:])))
