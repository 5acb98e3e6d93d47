"""Variant-effect scoring speed: genolm's batched, deduplicated windows against the naive per-variant loop.

The naive loop (:func:`genolm.inference.naive_variant_score`) scores each SNV with its own forward pass of
batch 1: mutate the window, re-tokenise, mask the token holding the variant, run the full model. genolm's path
(:func:`genolm.inference.score_variants`, what ``genolm vep`` runs) groups the SNVs by masked window (SNVs in
one token share it), runs the LM head only at the masked token and batches the windows. Both use the same
model, windows and variants, on the same device, after a warm-up of each path; each path is timed
``--repeats`` times and the fastest run counts. ``run_vep_s`` is the whole
``genolm vep`` call (VCF checks, reading, scoring, writing) on the same files.

The variants are every SNV of the shared test VCFs (``../shared/data``): 52 on the *A. thaliana* chloroplast
and 36 on the Chr5 excerpt. Without ``--model`` the model is a randomly initialised genolm masked LM of
``--preset`` shape (default ``tiny``); speed does not depend on the weights.

    python benchmarks/vep.py [--model CKPT | --preset tiny] [--window-tokens 128] [--batch-size 32] [--rc]

The comparison is then repeated at the model's full context (``window_tokens`` = the model's maximum, 1023
tokens for NT v1 presets), where the encoder dominates: the naive loop (eager) against genolm's path on the
model with every layer ``torch.compile``-d (what ``genolm vep --compile`` runs; its compilation happens in
a warm-up on every batch shape and is reported apart as ``compile_s``) and against the eager model.

The last line printed is a JSON object with ``speedup`` (naive seconds / genolm seconds) and ``max_abs_diff``
(largest absolute difference between the two sets of scores) at ``--window-tokens``, and at full context
``speedup_full_context`` / ``max_abs_diff_full_context`` (compiled; ``--no-compile``: eager) and
``speedup_full_context_eager`` / ``max_abs_diff_full_context_eager``.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pysam
import torch

from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMTokenizer
from genolm.inference import SNV, Genome, load_model, naive_variant_score, run_vep, score_variants
from genolm.inference.scoring import max_window_tokens, resolve_device
from genolm.parallel import compile_layers

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASETS = [
    ("athaliana_chloroplast.fa", "athaliana_chloroplast.vcf"),
    ("athaliana_chr5_tail.fa.gz", "athaliana_chr5_tail.vcf"),
]


def read_snvs(vcf: Path) -> list[SNV]:
    with pysam.VariantFile(str(vcf)) as records:
        return [
            SNV(r.chrom, r.pos - 1, r.ref, alt)
            for r in records
            for alt in r.alts or ()
            if len(r.ref) == 1 and len(alt) == 1
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=None, help="masked-LM checkpoint folder (default: random --preset model)"
    )
    parser.add_argument(
        "--preset", default="tiny", help="GenoLMConfig preset of the random model (default tiny)"
    )
    parser.add_argument("--data", default=str(SHARED), help="folder with the shared test data")
    parser.add_argument("--window-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rc", action="store_true", help="score both strands")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path; the fastest counts")
    parser.add_argument(
        "--no-compile", action="store_true", help="full context: time genolm's path on the eager model only"
    )
    parser.add_argument("--no-full-context", action="store_true", help="skip the full-context comparison")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.model:
        model, tokenizer = load_model(args.model, device=device)
    else:
        torch.manual_seed(0)
        model, tokenizer = load_model(
            GenoLMForMaskedLM(GenoLMConfig.from_preset(args.preset)).eval(), GenoLMTokenizer(), device=device
        )
    data = Path(args.data)
    sets = [
        (Genome(data / fasta), read_snvs(data / vcf), data / fasta, data / vcf) for fasta, vcf in DATASETS
    ]
    n_variants = sum(len(snvs) for _, snvs, _, _ in sets)
    kwargs = dict(window_tokens=args.window_tokens, rc=args.rc)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Warm-up of both paths on every genome (this also builds each sequence's token grid, a one-off cost).
    for genome, snvs, _, _ in sets:
        score_variants(model, tokenizer, genome, snvs[:4], batch_size=args.batch_size, **kwargs)
        for variant in snvs[:2]:
            naive_variant_score(model, tokenizer, genome, variant, **kwargs)

    def run_fast(scorer=model, **kwargs) -> list[float]:
        return [
            s.llr
            for genome, snvs, _, _ in sets
            for s in score_variants(scorer, tokenizer, genome, snvs, batch_size=args.batch_size, **kwargs)
        ]

    def run_naive(**kwargs) -> list[float]:
        return [
            naive_variant_score(model, tokenizer, genome, v, **kwargs)
            for genome, snvs, _, _ in sets
            for v in snvs
        ]

    def best_of(fn):
        """Result and the fastest of ``--repeats`` timings (the least disturbed by other work on the machine)."""
        times = []
        for _ in range(args.repeats):
            sync()
            began = time.perf_counter()
            result = fn()
            sync()
            times.append(time.perf_counter() - began)
        return result, min(times)

    fast, fast_s = best_of(lambda: run_fast(**kwargs))
    naive, naive_s = best_of(lambda: run_naive(**kwargs))
    full = {} if args.no_full_context else full_context(model, run_fast, run_naive, best_of, args, sync)

    with tempfile.TemporaryDirectory() as tmp:
        sync()
        began = time.perf_counter()
        for i, (genome, _, _, vcf) in enumerate(sets):
            run_vep(
                model,
                genome,
                vcf,
                Path(tmp) / f"out{i}.vcf.gz",
                tokenizer=tokenizer,
                batch_size=args.batch_size,
                progress=False,
                **kwargs,
            )
        sync()
        run_vep_s = time.perf_counter() - began
    records = sum(1 for _, _, _, vcf in sets for line in open(vcf) if not line.startswith("#"))

    diff = max_abs_diff(fast, naive)
    params = sum(p.numel() for p in model.parameters())
    strands = 2 if args.rc else 1
    print(
        f"model: {args.model or 'random ' + args.preset} ({params / 1e6:.1f} M parameters) on {device}, "
        f"{torch.get_num_threads()} CPU threads; window {args.window_tokens} tokens, {strands} strand(s)"
    )
    print(
        f"naive loop: {n_variants} SNVs, {n_variants * strands} forward passes (batch 1) in {naive_s:.2f} s "
        f"({n_variants / naive_s:.1f} variants/s)"
    )
    print(
        f"genolm:     {n_variants} SNVs in {fast_s:.2f} s ({n_variants / fast_s:.1f} variants/s), "
        f"batch {args.batch_size}"
    )
    print(
        f"genolm vep: {records} VCF records (all kept, indels tagged) in {run_vep_s:.2f} s "
        f"({records / run_vep_s:.1f} records/s)"
    )
    print(
        json.dumps(
            {
                "benchmark": "vep",
                "model": args.model or f"random {args.preset}",
                "parameters": params,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "variants": n_variants,
                "vcf_records": records,
                "strands": strands,
                "window_tokens": args.window_tokens,
                "batch_size": args.batch_size,
                "naive_s": round(naive_s, 4),
                "fast_s": round(fast_s, 4),
                "run_vep_s": round(run_vep_s, 4),
                "variants_per_s": round(n_variants / fast_s, 1),
                "speedup": round(naive_s / fast_s, 2),
                "max_abs_diff": diff,
                **full,
            }
        )
    )


def max_abs_diff(a: list[float], b: list[float]) -> float:
    return float(np.max(np.abs(np.array(a) - np.array(b))))


def full_context(model, run_fast, run_naive, best_of, args, sync) -> dict:
    """Naive loop vs genolm's path (compiled and eager) at the model's full context; the JSON keys."""
    kwargs = dict(window_tokens=max_window_tokens(model), rc=args.rc)
    naive, naive_s = best_of(lambda: run_naive(**kwargs))
    run_fast(**kwargs)  # warm-up
    eager, eager_s = best_of(lambda: run_fast(**kwargs))
    out = {
        "full_context_tokens": kwargs["window_tokens"],
        "naive_full_context_s": round(naive_s, 4),
        "fast_full_context_eager_s": round(eager_s, 4),
        "speedup_full_context_eager": round(naive_s / eager_s, 2),
        "max_abs_diff_full_context_eager": max_abs_diff(eager, naive),
    }
    print(f"full context ({kwargs['window_tokens']} tokens): naive {naive_s:.2f} s, genolm eager {eager_s:.2f} s")
    if args.no_compile:
        return {**out, "speedup_full_context": out["speedup_full_context_eager"],
                "max_abs_diff_full_context": out["max_abs_diff_full_context_eager"]}
    compiled = copy.deepcopy(model)
    compile_layers(compiled)
    sync()
    began = time.perf_counter()
    run_fast(compiled, **kwargs)  # compiles every batch shape of the run
    sync()
    compile_s = time.perf_counter() - began
    fast, fast_s = best_of(lambda: run_fast(compiled, **kwargs))
    print(f"full context: genolm compiled {fast_s:.2f} s (warm-up with compilation {compile_s:.1f} s)")
    return {
        **out,
        "compile_s": round(compile_s, 2),
        "fast_full_context_s": round(fast_s, 4),
        "variants_per_s_full_context": round(len(fast) / fast_s, 1),
        "speedup_full_context": round(naive_s / fast_s, 2),
        "max_abs_diff_full_context": max_abs_diff(fast, naive),
    }


if __name__ == "__main__":
    main()
