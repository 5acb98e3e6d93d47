"""Training throughput and peak memory: genolm's masked LM vs transformers' ``EsmForMaskedLM``.

Both models get the same configuration (NT v1 / AgroNT architecture, ESM-expressible) and the same weights:
the genolm model is initialised with a fixed seed and its weights are copied into ESM with genolm's
converter (``genolm.convert.genolm_key_to_esm``); the script checks that both give the same loss on the
first batch before timing anything. Each model trains in its own subprocess (so peak memory is its own):
AdamW, fp32, identical masked batches, a few warm-up steps, then timed steps. genolm runs the way the
pretraining recipe runs it on CPU/GPU, with ``sparse_prediction`` (the LM head only at the ~15 % masked
positions); ESM projects every position to the vocabulary.

A third run, ``genolm_compiled``, trains genolm the way ``--compile true`` does in the recipes: every
transformer layer ``torch.compile``-d (``genolm.parallel.compile_layers``) and genolm's AdamW builder
(``genolm.training.optim.build_optimizer``, fused where the device has the kernel); its warm-up steps
include the compilation, which is not timed.

The runs are repeated ``--repeats`` times alternately (genolm, genolm compiled, ESM, ...) and the best
throughput of each is kept, which evens out load from other processes. The last line printed is a JSON object
with ``tokens_per_s_genolm``, ``tokens_per_s_genolm_compiled``, ``tokens_per_s_esm``, ``speedup`` (eager
genolm / ESM), ``speedup_compiled`` (compiled genolm / ESM), ``peak_memory_mb_*`` (peak resident memory of
the process on CPU, peak allocated memory on CUDA) and the memory ratios.

    python benchmarks/train_throughput.py [--hidden-size 256] [--layers 4] [--seq-len 512] [--batch-size 8]
        [--no-compiled]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

INITIAL_LOSS_TOLERANCE = 1e-4


def build_config(args: argparse.Namespace):
    from genolm import GenoLMConfig

    return GenoLMConfig.from_preset(
        "agront-1b",  # NT v1 / AgroNT architecture; sizes overridden below
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden_size,
        token_dropout=True,
    )


def batches(args: argparse.Namespace, n: int) -> list[dict[str, torch.Tensor]]:
    """``n`` masked batches of random k-mer windows (the same for both models)."""
    from genolm import GenoLMTokenizer
    from genolm.training import MLMCollator

    tokenizer = GenoLMTokenizer()
    collator = MLMCollator.from_tokenizer(tokenizer, args.seq_len, vocab_size=4105, seed=0)
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(4, 4100, (args.batch_size, args.seq_len), generator=g)
        ids[:, 0] = tokenizer.cls_token_id
        out.append(collator([{"input_ids": row.numpy()} for row in ids]))
    return out


def build_model(which: str, args: argparse.Namespace) -> torch.nn.Module:
    from genolm import GenoLMForMaskedLM
    from genolm.convert import esm_config_from_genolm, genolm_key_to_esm

    config = build_config(args)
    torch.manual_seed(0)
    model = GenoLMForMaskedLM(config)
    if which.startswith("genolm"):
        return model
    from transformers import EsmForMaskedLM

    esm = EsmForMaskedLM(esm_config_from_genolm(config))
    state = {genolm_key_to_esm(k): v for k, v in model.state_dict().items()}
    missing, unexpected = esm.load_state_dict(state, strict=False)
    # ESM's protein contact head is unused by the masked-LM loss and has no genolm counterpart.
    missing = [k for k in missing if not any(s in k for s in ("position_ids", "inv_freq", "contact_head"))]
    if missing or unexpected:
        raise RuntimeError(f"weight conversion incomplete: missing {missing}, unexpected {unexpected}")
    return esm


def run_one(which: str, args: argparse.Namespace) -> dict[str, float]:
    """Train ``which`` for warm-up + timed steps in this process; report throughput and memory."""
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    data = batches(args, args.warmup + args.steps)
    model = build_model(which, args).to(device).train()
    if which == "genolm_compiled":  # as the recipes run with --compile true
        from genolm.parallel import compile_layers
        from genolm.training.optim import build_optimizer

        compile_layers(model)
        optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.01)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # genolm's LM head runs only at the masked positions (the pretraining loop's switch); ESM has no such option.
    extra = {"sparse_prediction": True} if which.startswith("genolm") else {}
    with torch.no_grad():
        first = {k: v.to(device) for k, v in data[0].items()}
        initial_loss = float(model(**first, **extra).loss)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i, batch in enumerate(data):
        batch = {k: v.to(device) for k, v in batch.items()}
        start = time.perf_counter()
        loss = model(**batch, **extra).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    tokens = args.batch_size * args.seq_len
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "tokens_per_s": tokens * len(times) / sum(times),
        "peak_memory_mb": peak_mb,
        "initial_loss": initial_loss,
        "device": device.type,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per sequence, <cls> included")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    parser.add_argument("--no-compiled", action="store_true", help="skip the compiled genolm run")
    parser.add_argument("--only", choices=["genolm", "genolm_compiled", "esm"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.only:  # child process: one model
        print(json.dumps(run_one(args.only, args)))
        return

    forwarded = [a for a in sys.argv[1:]]
    runs = ("genolm", "esm") if args.no_compiled else ("genolm", "genolm_compiled", "esm")
    results: dict[str, list[dict]] = {which: [] for which in runs}
    for _ in range(args.repeats):
        for which in runs:
            child = subprocess.run(
                [sys.executable, __file__, *forwarded, "--only", which], capture_output=True, text=True, check=False
            )
            if child.returncode != 0:
                raise SystemExit(f"{which} run failed:\n{child.stderr[-3000:]}")
            result = json.loads(child.stdout.strip().splitlines()[-1])
            results[which].append(result)
            print(f"{which:15s} {result['tokens_per_s']:10.0f} tokens/s  peak {result['peak_memory_mb']:8.0f} MB  "
                  f"initial loss {result['initial_loss']:.6f}")

    initial = {k: v[0]["initial_loss"] for k, v in results.items()}
    if any(abs(loss - initial["esm"]) > INITIAL_LOSS_TOLERANCE for loss in initial.values()):
        raise SystemExit(f"initial losses differ: {initial}; the weight conversion or the models disagree")
    best = {k: max(r["tokens_per_s"] for r in v) for k, v in results.items()}
    memory = {k: min(r["peak_memory_mb"] for r in v) for k, v in results.items()}
    config = build_config(args)
    print(
        json.dumps(
            {
                "device": results["genolm"][0]["device"],
                "config": {
                    "hidden_size": config.hidden_size,
                    "layers": config.num_hidden_layers,
                    "heads": config.num_attention_heads,
                    "vocab_size": config.vocab_size,
                    "seq_len": args.seq_len,
                    "batch_size": args.batch_size,
                },
                "initial_loss_genolm": initial["genolm"],
                "initial_loss_esm": initial["esm"],
                "tokens_per_s_genolm": round(best["genolm"], 1),
                "tokens_per_s_esm": round(best["esm"], 1),
                "speedup": round(best["genolm"] / best["esm"], 3),
                "peak_memory_mb_genolm": round(memory["genolm"], 1),
                "peak_memory_mb_esm": round(memory["esm"], 1),
                "memory_ratio": round(memory["genolm"] / memory["esm"], 3),
                **compiled_keys(initial, best, memory),
            }
        )
    )


def compiled_keys(initial: dict, best: dict, memory: dict) -> dict:
    """The compiled run's keys of the JSON line (none with ``--no-compiled``)."""
    if "genolm_compiled" not in best:
        return {}
    return {
        "initial_loss_genolm_compiled": initial["genolm_compiled"],
        "tokens_per_s_genolm_compiled": round(best["genolm_compiled"], 1),
        "speedup_compiled": round(best["genolm_compiled"] / best["esm"], 3),
        "speedup_compiled_vs_eager": round(best["genolm_compiled"] / best["genolm"], 3),
        "peak_memory_mb_genolm_compiled": round(memory["genolm_compiled"], 1),
        "memory_ratio_compiled": round(memory["genolm_compiled"] / memory["esm"], 3),
    }


if __name__ == "__main__":
    main()
