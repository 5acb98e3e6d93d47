"""Run by tests/test_parallel_fsdp.py, as one process (``--parallel none``) or under ``torchrun
--nproc_per_node 2`` (``--parallel fsdp`` or ``ddp``).

Trains a tiny model (masked LM or sequence classifier) for a few steps through ``genolm.parallel`` on one
fixed global batch of 8 rows, split evenly over the processes, with every token / row labelled so that the
mean of the per-process losses is the global loss. Writes ``report.json`` (losses, gradient norms, sharding),
the consolidated export, the optimizer state and the trained model's logits on a probe batch, so the test
can compare runtimes and reload the export on the CPU. ``--tensor_parallel 2``: the processes form a (dp, tp)
mesh and a tensor-parallel group shares its rows; ``--meta``: the model is built on the meta device and the
initial (gathered) weights are saved as ``initial.pt``.

    python tests/parallel_worker.py OUT_DIR --parallel none --model mlm [--compile] [--tensor_parallel 2] [--ffn swiglu] [--meta]
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch

from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMForSequenceClassification, GenoLMTokenizer, parallel
from genolm.training.optim import build_optimizer

ROWS, TOKENS, STEPS = 8, 16, 3


def global_batch(task: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 4100, (ROWS, TOKENS), generator=g)
    input_ids[:, 0] = 3  # <cls>
    labels = input_ids.clone() if task == "mlm" else torch.randint(0, 3, (ROWS,), generator=g)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--parallel", default="none")
    parser.add_argument("--model", choices=("mlm", "cls"), default="mlm")
    parser.add_argument("--compile", action="store_true", help="torch.compile each layer in rt.prepare")
    parser.add_argument("--tensor_parallel", type=int, default=1)
    parser.add_argument("--ffn", choices=("gelu", "swiglu"), default="gelu", help="feed-forward of the tiny model")
    parser.add_argument("--meta", action="store_true", help="build on the meta device; save the initial weights")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rt = parallel.setup(parallel.resolve_backend(args.parallel), mixed_precision="no", tensor_parallel=args.tensor_parallel)
    torch.manual_seed(0)
    shape = {"ffn_type": "swiglu", "ffn_bias": False, "position_embedding_type": "rotary"} if args.ffn == "swiglu" else {}
    with torch.device("meta") if args.meta else contextlib.nullcontext():
        if args.model == "mlm":
            model = GenoLMForMaskedLM(GenoLMConfig.from_preset("tiny", sparse_prediction=False, **shape))
        else:
            model = GenoLMForSequenceClassification(GenoLMConfig.from_preset("tiny", num_labels=3, **shape))
    model, optimizer = rt.prepare(model, lambda m: build_optimizer(m, 1e-2, 0.1), compile=args.compile)
    if args.meta:
        initial = rt.model_state_dict(model)
        if rt.is_main_process:
            torch.save(initial, args.out / "initial.pt")
    batch = global_batch(args.model)
    # the processes of a tensor-parallel group share their rows
    per_process = ROWS // rt.data_parallel_size
    rows = slice(rt.data_parallel_index * per_process, (rt.data_parallel_index + 1) * per_process)
    local = rt.to_device({k: v[rows] for k, v in batch.items()})
    losses, norms = [], []
    for _ in range(STEPS):
        with rt.autocast():
            loss = model(**local).loss
        rt.backward(loss)
        norms.append(float(rt.clip_grad_norm(model, 1.0)))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rt.step_end()
        losses.append(rt.reduce_mean(loss.detach()).item())

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=local["input_ids"], attention_mask=local["attention_mask"]).logits
    logits = rt.gather_for_metrics(logits.float().contiguous())[0].cpu()
    replicas = rt.num_processes // rt.data_parallel_size  # a tensor-parallel group computed the same rows
    logits = logits.reshape(rt.num_processes, -1, *logits.shape[1:])[::replicas].flatten(0, 1)
    weights = rt.model_state_dict(model)
    optimizer_state = rt.optimizer_state_dict(model, optimizer)
    sharding = rt.sharding_summary(model)
    if rt.is_main_process:
        export = args.out / "export"
        rt.unwrap(model).save_pretrained(export, state_dict=weights)
        GenoLMTokenizer().save_pretrained(export)
        torch.save({"batch": batch, "logits": logits, "optimizer": optimizer_state}, args.out / "tensors.pt")
        report = {"backend": rt.backend, "num_processes": rt.num_processes, "losses": losses, "norms": norms, "sharding": sharding}
        (args.out / "report.json").write_text(json.dumps(report))
    rt.wait_for_everyone()


if __name__ == "__main__":
    main()
