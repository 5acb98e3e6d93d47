"""Genome-scale ``genolm vep``: speed on 1 and 2 processes, and memory against input size.

1. **Processes.** ``--snvs`` SNVs (default 3,000) at random positions of the real *A. thaliana* Chr5 excerpt
   (``../shared/data/athaliana_chr5_tail.fa.gz``, REF from the FASTA) are scored by a randomly initialised
   ``tiny`` masked LM, ``--window-tokens`` 16, under ``torchrun --nproc_per_node 1`` and ``2`` (gloo, one
   thread per process, chunks of ``--chunk-records``). The time is the main process's ``run_vep`` call (VCF
   checks, model loading, scoring, merge), not Python's start-up nor the import of transformers' modelling
   code; the two outputs must be identical.
2. **Memory.** One process scores 10,000 and 100,000 such SNVs (``--rss-records``); the peak resident memory of
   each run (``ru_maxrss`` of a fresh process) should not grow with the number of records.
3. **GPU** (when CUDA is present): an ``agront-1b``-shaped model (random weights, bfloat16) scores
   ``--gpu-snvs`` SNVs at full context (1,023 tokens, about 6 kb) in one process.

    python benchmarks/inference_scaling.py [--snvs 3000] [--rss-records 10000,100000] [--gpu-snvs 512]

The last line printed is a JSON object: ``variants_per_s_1_process``, ``variants_per_s_2_processes``,
``speedup_2_processes``, ``peak_rss_mb_<N>`` per size, ``peak_rss_ratio_100k_vs_10k`` and, with a GPU,
``variants_per_s_agront_1b_bf16_gpu``. On a machine with fewer free cores than processes the speedup says
more about the machine than about genolm.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FASTA = REPO.parent / "shared" / "data" / "athaliana_chr5_tail.fa.gz"

WORKER = """
import json, sys, torch
torch.set_num_threads(1)
import genolm
from genolm.inference import run_vep

genolm.GenoLMForMaskedLM  # import transformers' modelling code before the clock starts
from genolm.inference.distributed import start_workers

model, vcf, out, window, chunk = sys.argv[1:6]
workers = start_workers("cpu")
report = run_vep(model, sys.argv[6], vcf, out, window_tokens=int(window), device="cpu", chunk_records=int(chunk),
                 progress=False, workers=workers)
if workers.is_main:
    print("RESULT " + json.dumps({"records": report.records, "seconds": report.seconds}))
"""

RSS_WORKER = """
import json, resource, sys, torch
torch.set_num_threads(1)
from genolm.inference import run_vep

model, vcf, out, window, chunk = sys.argv[1:6]
report = run_vep(model, sys.argv[6], vcf, out, window_tokens=int(window), device="cpu", chunk_records=int(chunk),
                 progress=False)
print("RESULT " + json.dumps({"records": report.records, "seconds": report.seconds,
                              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def snv_vcf(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` SNVs at sorted random A/C/G/T positions of the Chr5 excerpt, REF from the FASTA."""
    from genolm.inference import Genome

    genome = Genome(FASTA)
    ((name, length),) = genome.lengths.items()
    seq = genome.fetch(name, 0, length).upper()
    rng = random.Random(seed)
    candidates = [p for p in range(length) if seq[p] in "ACGT"]
    positions = sorted(rng.sample(candidates, n))
    with open(path, "w") as handle:
        handle.write(f"##fileformat=VCFv4.2\n##contig=<ID={name},length={length}>\n")
        handle.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for i, p in enumerate(positions):
            alt = rng.choice([b for b in "ACGT" if b != seq[p]])
            handle.write(f"{name}\t{p + 1}\tv{i}\t{seq[p]}\t{alt}\t.\tPASS\t.\n")
    return path


def tiny_checkpoint(folder: Path) -> Path:
    import torch

    from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMTokenizer

    torch.manual_seed(0)
    GenoLMForMaskedLM(GenoLMConfig.from_preset("tiny")).save_pretrained(folder)
    GenoLMTokenizer().save_pretrained(folder)
    return folder


def result_of(command: list[str], env: dict) -> dict:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(command[:6])} ... failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def gpu_variants_per_s(work: Path, n: int, preset: str = "agront-1b", device: str = "cuda") -> float:
    """variants/s of one process scoring ``n`` SNVs at the model's full context in bfloat16 (after a warm-up)."""
    import torch

    from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMTokenizer
    from genolm.inference import run_vep

    torch.manual_seed(0)
    model = GenoLMForMaskedLM(GenoLMConfig.from_preset(preset)).to(device, torch.bfloat16).eval()
    vcf = snv_vcf(work / "gpu.vcf", n, seed=1)
    tokenizer = GenoLMTokenizer()
    run_vep(model, FASTA, snv_vcf(work / "warm.vcf", 64, seed=2), work / "warm.tsv", tokenizer=tokenizer,
            device=device, dtype="bfloat16", progress=False)  # warm-up: kernels, allocator
    report = run_vep(model, FASTA, vcf, work / "gpu.tsv", tokenizer=tokenizer, device=device, dtype="bfloat16",
                     progress=False)
    return report.records / report.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snvs", type=int, default=3000)
    parser.add_argument("--chunk-records", type=int, default=250)
    parser.add_argument("--window-tokens", type=int, default=16)
    parser.add_argument("--rss-records", default="10000,100000")
    parser.add_argument("--gpu-snvs", type=int, default=512)
    args = parser.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="genolm-scaling-") as scratch:
        work = Path(scratch)
        model = tiny_checkpoint(work / "tiny")
        worker, rss_worker = work / "worker.py", work / "rss_worker.py"
        worker.write_text(WORKER)
        rss_worker.write_text(RSS_WORKER)
        vcf = snv_vcf(work / "snvs.vcf", args.snvs)
        outputs = []
        for n in (1, 2):
            out = work / f"scored_{n}.vcf.gz"
            command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--rdzv_backend",
                       "c10d", "--rdzv_endpoint", "localhost:0", str(worker), str(model), str(vcf), str(out),
                       str(args.window_tokens), str(args.chunk_records), str(FASTA)]
            run = result_of(command, env)
            rate = run["records"] / run["seconds"]
            results[f"variants_per_s_{n}_process{'es' if n > 1 else ''}"] = round(rate, 1)
            print(f"{n} process(es): {run['records']} SNVs in {run['seconds']:.1f} s = {rate:.1f} variants/s")
            outputs.append(out.read_bytes())
        if outputs[0] != outputs[1]:
            raise SystemExit("the outputs of 1 and 2 processes differ")
        results["speedup_2_processes"] = round(results["variants_per_s_2_processes"] /
                                               results["variants_per_s_1_process"], 2)
        sizes = [int(n) for n in args.rss_records.split(",")]
        for n in sizes:
            big = snv_vcf(work / f"rss_{n}.vcf", n, seed=3)
            command = [sys.executable, str(rss_worker), str(model), str(big), str(work / f"rss_{n}.vcf.gz"),
                       str(args.window_tokens), "10000", str(FASTA)]
            run = result_of(command, env)
            results[f"peak_rss_mb_{n}"] = round(run["peak_rss_mb"], 1)
            print(f"{n} records: peak RSS {run['peak_rss_mb']:.1f} MB ({run['records'] / run['seconds']:.0f} "
                  "variants/s, 1 process)")
            big.unlink()
        if len(sizes) >= 2:
            key = f"peak_rss_ratio_{_short(sizes[-1])}_vs_{_short(sizes[0])}"
            results[key] = round(results[f"peak_rss_mb_{sizes[-1]}"] / results[f"peak_rss_mb_{sizes[0]}"], 3)
        import torch

        if torch.cuda.is_available():
            rate = gpu_variants_per_s(work, args.gpu_snvs)
            results["variants_per_s_agront_1b_bf16_gpu"] = round(rate, 1)
            print(f"agront-1b shape, bf16, full context on {torch.cuda.get_device_name()}: {rate:.1f} variants/s")
    print(json.dumps(results))


def _short(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


if __name__ == "__main__":
    main()
