"""Run by tests/test_checkpoint_sharded.py, as one process (``--parallel none``) or under ``torchrun
--nproc_per_node 2`` (``--parallel fsdp`` or ``ddp``).

Builds a tiny masked LM (from a checkpoint's ``config.json`` with ``--resume``, whose model and optimizer
state it then loads), trains ``--steps`` AdamW steps on one fixed global batch split over the processes, and
writes a sharded checkpoint to ``OUT/checkpoints``. ``OUT/loaded.pt`` (after the resume) and ``OUT/saved.pt``
(at the save) hold the full weights and optimizer state gathered by the runtime, the process states and the
model's logits on the global batch, so the test can compare runs on other numbers of processes exactly.

    python tests/sharded_checkpoint_worker.py OUT --parallel none [--resume CHECKPOINT] [--steps 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMTokenizer, parallel
from genolm.training.checkpoint import load_checkpoint, save_sharded_checkpoint
from genolm.training.optim import build_optimizer

ROWS, TOKENS = 8, 16


def global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 4100, (ROWS, TOKENS), generator=g)
    input_ids[:, 0] = 3  # <cls>
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids.clone()}


def full_state(rt: parallel.Runtime, model: torch.nn.Module, optimizer: torch.optim.Optimizer, local: dict) -> dict:
    """Gathered weights and optimizer state, and the logits on the global batch (every process calls it)."""
    weights = rt.model_state_dict(model)
    optimizer_state = rt.optimizer_state_dict(model, optimizer)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=local["input_ids"], attention_mask=local["attention_mask"]).logits
    model.train()
    logits = rt.gather_for_metrics(logits.float().contiguous())[0].cpu()
    return {"model": weights, "optimizer": optimizer_state, "logits": logits}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--parallel", default="none")
    parser.add_argument("--resume", type=Path)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--async-save", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rt = parallel.setup(parallel.resolve_backend(args.parallel), mixed_precision="no")
    torch.manual_seed(0)
    if args.resume:
        config = GenoLMConfig.from_pretrained(args.resume)
    else:
        config = GenoLMConfig.from_preset("tiny", sparse_prediction=False)
    model, optimizer = rt.prepare(GenoLMForMaskedLM(config), lambda m: build_optimizer(m, 1e-2, 0.1))
    batch = global_batch()
    per_process = ROWS // rt.num_processes
    rows = slice(rt.process_index * per_process, (rt.process_index + 1) * per_process)
    local = rt.to_device({k: v[rows] for k, v in batch.items()})

    step = 0
    if args.resume:
        resumed = load_checkpoint(args.resume, rt, model, optimizer)
        step = resumed.trainer["step"]
        loaded = full_state(rt, model, optimizer, local)
        processes = rt.gather_object(resumed.process)
        if rt.is_main_process:
            torch.save({**loaded, "processes": processes, "trainer": resumed.trainer}, args.out / "loaded.pt")

    for _ in range(args.steps):
        loss = model(**local).loss
        rt.backward(loss)
        rt.clip_grad_norm(model, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rt.step_end()
        step += 1

    saved = full_state(rt, model, optimizer, local)
    save = save_sharded_checkpoint(
        args.out / "checkpoints", step, rt, model, optimizer, tokenizer=GenoLMTokenizer(),
        trainer_state={"step": step}, process_state={"process_index": rt.process_index, "rows": torch.arange(ROWS)[rows]},
        asynchronous=args.async_save,
    )
    if args.async_save:  # training goes on while the shards are written: the checkpoint keeps the saved step
        model(**local).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    save.finish()
    if rt.is_main_process:
        torch.save({**saved, "batch": batch}, args.out / "saved.pt")
    rt.wait_for_everyone()


if __name__ == "__main__":
    main()
