"""In-silico mutagenesis speed: one masked forward per token (batched) against the naive per-substitution loop.

The naive loop (``genolm ism --naive``, :func:`genolm.inference.naive_ism_region`) scores each of the ``3 L``
substitutions of a region with its own forward pass: mutate the window, re-tokenise, mask the token holding the
base, run the model. genolm's path (:func:`genolm.inference.ism_region`) masks each token once and reads all
``3 k`` substitutions of that token from the one output distribution, with windows batched: ``L / k`` forward
passes. Both use the same model, windows and region, on the same device, after a warm-up of each path; each
path is timed ``--repeats`` times and the fastest run counts.

Without ``--model`` the model is a randomly initialised genolm masked LM of ``--preset`` shape (default
``tiny``); speed does not depend on the weights. The region defaults to 120 bp of the *A. thaliana*
chloroplast from the shared test data (``../shared/data``).

    python benchmarks/ism.py [--model CKPT | --preset tiny] [--region NC_000932.1:2001-2120] [--window-tokens 128]

The last line printed is a JSON object with ``speedup`` (naive seconds / genolm seconds) and ``max_abs_diff``
(largest absolute difference between the two score tables).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMTokenizer
from genolm.inference import Genome, ism_region, load_model, naive_ism_region, parse_region
from genolm.inference.scoring import resolve_device

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def build_model(args: argparse.Namespace):
    if args.model:
        return load_model(args.model, device=args.device)
    torch.manual_seed(0)
    model = GenoLMForMaskedLM(GenoLMConfig.from_preset(args.preset)).eval()
    return load_model(model, GenoLMTokenizer(), device=args.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=None, help="masked-LM checkpoint folder (default: random --preset model)"
    )
    parser.add_argument(
        "--preset", default="tiny", help="GenoLMConfig preset of the random model (default tiny)"
    )
    parser.add_argument("--fasta", default=str(SHARED / "athaliana_chloroplast.fa"))
    parser.add_argument("--region", default="NC_000932.1:2001-2120", help="1-based closed (default: 120 bp)")
    parser.add_argument("--window-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path; the fastest counts")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.device = str(device)
    model, tokenizer = build_model(args)
    genome = Genome(args.fasta)
    chrom, start, end = parse_region(args.region, genome)
    kwargs = dict(window_tokens=args.window_tokens)

    def best_of(fn, *fn_args, **fn_kwargs):
        """Result and the fastest of ``--repeats`` timings (the least disturbed by other work on the machine)."""
        times = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            result = fn(*fn_args, **fn_kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - began)
        return result, min(times)

    # Warm-up: a few bases through each path (allocations, kernels, tokenizer caches, the token grid).
    ism_region(model, tokenizer, genome, chrom, start, start + 12, batch_size=args.batch_size, **kwargs)
    naive_ism_region(model, tokenizer, genome, chrom, start, start + 2, **kwargs)

    fast, fast_s = best_of(
        ism_region, model, tokenizer, genome, chrom, start, end, batch_size=args.batch_size, **kwargs
    )
    naive, naive_s = best_of(naive_ism_region, model, tokenizer, genome, chrom, start, end, **kwargs)
    same_nan = bool(np.array_equal(np.isnan(fast.scores), np.isnan(naive.scores)))
    max_abs_diff = float(np.nanmax(np.abs(fast.scores - naive.scores)))
    substitutions = int(np.isfinite(fast.scores).sum())
    grid = genome.grid(chrom, tokenizer.k)
    fast_forwards = int(grid.token_of(end - 1) - grid.token_of(start) + 1)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {args.model or 'random ' + args.preset} ({params / 1e6:.1f} M parameters) on {device}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    print(
        f"region {chrom}:{start + 1}-{end} ({end - start} bp, {substitutions} substitutions), "
        f"window {args.window_tokens} tokens"
    )
    print(
        f"naive loop: {substitutions} forward passes (batch 1) in {naive_s:.2f} s "
        f"({substitutions / naive_s:.1f} substitutions/s)"
    )
    print(
        f"genolm:     {fast_forwards} masked forward passes (batch {args.batch_size}) in {fast_s:.2f} s "
        f"({substitutions / fast_s:.1f} substitutions/s)"
    )
    print(
        json.dumps(
            {
                "benchmark": "ism",
                "model": args.model or f"random {args.preset}",
                "parameters": params,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "region": f"{chrom}:{start + 1}-{end}",
                "bp": end - start,
                "substitutions": substitutions,
                "window_tokens": args.window_tokens,
                "batch_size": args.batch_size,
                "naive_forwards": substitutions,
                "fast_forwards": fast_forwards,
                "naive_s": round(naive_s, 4),
                "fast_s": round(fast_s, 4),
                "speedup": round(naive_s / fast_s, 2),
                "same_nan_pattern": same_nan,
                "max_abs_diff": max_abs_diff,
            }
        )
    )


if __name__ == "__main__":
    main()
