"""GenoLMTokenizer against NT's Hugging Face tokenizer on real plant sequence: same ids, and how much faster.

NT's published tokenizer is transformers' `EsmTokenizer` with NT's 4107-token `vocab.txt` (the 6-mers are
"no split" tokens matched by a Python trie) and `eos_token: null`. This script rebuilds it from the documented
NT v1 token list, reads the real genome excerpts in `../shared/data` beside the project root (2.15 Mb:
A. thaliana Chr5 tail, rice Chr2 1 Mb, A. thaliana chloroplast), upper-cases them (EsmTokenizer turns
lower-case bases into `<unk>`), and

1. tokenizes every record whole with both: `GenoLMTokenizer.encode_genome` vs `EsmTokenizer.__call__`;
2. tokenizes the records cut into 6 kb windows, in batches, with padding: `GenoLMTokenizer.__call__` (numpy
   path, and the Rust `tokenizers` backend alone) vs `EsmTokenizer.__call__`;
3. repeats the id comparison on a rice excerpt with N runs inserted (the real excerpts contain no N).

Timings are the best of `--repeats` runs after a warm-up. The last line printed is one JSON object.

    python benchmarks/tokenizer.py [--data DIR] [--window 6000] [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tokenizers
import transformers
from transformers import EsmTokenizer

from genolm.genome import read_records as genome_records
from genolm.tokenization_genolm import GenoLMTokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = ("athaliana_chr5_tail.fa.gz", "rice_chr2_1mb.fa.gz", "athaliana_chloroplast.fa")


def nt_v1_vocab(k: int = 6) -> list[str]:
    """NT v1 / AgroNT vocab.txt: 4 special tokens, the k-mers over ATCG, A T C G N, <eos>, <bos>."""
    kmers = ["".join(p) for p in itertools.product("ATCG", repeat=k)]
    return ["<unk>", "<pad>", "<mask>", "<cls>", *kmers, "A", "T", "C", "G", "N", "<eos>", "<bos>"]


def nt_tokenizer(workdir: Path) -> EsmTokenizer:
    vocab = workdir / "vocab.txt"
    vocab.write_text("\n".join(nt_v1_vocab()))
    return EsmTokenizer(str(vocab), eos_token=None)


def read_records(data: Path) -> list[tuple[str, str]]:
    records = []
    for name in FILES:
        path = data / name
        if not path.exists():
            sys.exit(f"missing {path}: the shared genome excerpts are expected in {data}")
        records.extend((f"{name}:{seq_id}", seq) for seq_id, seq in genome_records(path))
    return records


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def windows_of(seq: str, size: int) -> list[str]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def with_n_runs(seq: str, seed: int = 0) -> str:
    rng = random.Random(seed)
    out = list(seq)
    for _ in range(len(seq) // 2000):
        at = rng.randrange(len(out))
        out[at:at] = "N" * rng.choice([1, 1, 2, 3, 7, 50, 1000])
    return "".join(out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help=f"genome excerpts (default {DATA})")
    parser.add_argument(
        "--window", type=int, default=6000, help="window size in bases for the __call__ benchmark"
    )
    parser.add_argument("--batch", type=int, default=32, help="windows per __call__")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (best kept)")
    args = parser.parse_args(argv)

    records = read_records(args.data)
    upper = [(name, seq.upper()) for name, seq in records]
    bases = sum(len(seq) for _, seq in records)
    ours = GenoLMTokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        nt = nt_tokenizer(Path(tmp))

    # warm-up (imports, caches, thread pools)
    sample = upper[0][1][:60_000]
    (
        nt(sample),
        ours.encode_genome(sample),
        ours(windows_of(sample, args.window)),
        nt(windows_of(sample, 6000)),
    )

    # 1. whole records
    t_nt_genome, nt_ids = best_time(lambda: [nt(seq)["input_ids"] for _, seq in upper], 1)
    t_genome, genome_ids = best_time(lambda: [ours.encode_genome(seq) for _, seq in upper], args.repeats)
    identical_genome = all(g.tolist() == e[1:] for g, e in zip(genome_ids, nt_ids))
    softmask_invariant = all(
        np.array_equal(ours.encode_genome(seq), g) for (_, seq), g in zip(records, genome_ids)
    )

    # 2. windows, batched, padded
    windows = [w for _, seq in upper for w in windows_of(seq, args.window)]
    batches = [windows[i : i + args.batch] for i in range(0, len(windows), args.batch)]

    def run(tokenizer):
        return [tokenizer(batch, padding=True) for batch in batches]

    t_nt_call, nt_batches = best_time(lambda: run(nt), 1)
    t_call, call_batches = best_time(lambda: run(ours), args.repeats)
    ours.numpy_batch_encode = False
    t_backend, backend_batches = best_time(lambda: run(ours), 1)
    ours.numpy_batch_encode = True
    identical_call = all(
        a["input_ids"] == b["input_ids"] == c["input_ids"] and a["attention_mask"] == c["attention_mask"]
        for a, b, c in zip(call_batches, backend_batches, nt_batches)
    )

    # 3. N runs (real excerpts have none)
    with_n = with_n_runs(upper[1][1][:300_000])
    expected = nt(with_n)["input_ids"]
    n_windows = windows_of(with_n, args.window)
    identical_n = (
        ours.encode_genome(with_n).tolist() == expected[1:]
        and ours(n_windows)["input_ids"] == nt(n_windows)["input_ids"]
    )

    result = {
        "identical": bool(identical_genome and identical_call and identical_n),
        "identical_whole_records": identical_genome,
        "identical_windows": identical_call,
        "identical_with_n_runs": identical_n,
        "softmask_invariant": softmask_invariant,
        "speedup_encode_genome": round(t_nt_genome / t_genome, 1),
        "speedup_call": round(t_nt_call / t_call, 1),
        "speedup_call_rust_backend": round(t_nt_call / t_backend, 2),
        "bases": bases,
        "records": [name for name, _ in records],
        "windows": len(windows),
        "window": args.window,
        "batch": args.batch,
        "seconds": {
            "esm_whole_records": round(t_nt_genome, 4),
            "encode_genome": round(t_genome, 4),
            "esm_call": round(t_nt_call, 4),
            "call": round(t_call, 4),
            "call_rust_backend": round(t_backend, 4),
        },
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
    }
    print(f"{bases:,} bases in {len(records)} records, {len(windows)} windows of {args.window} bases")
    print(f"encode_genome  {t_genome * 1e3:9.1f} ms  vs EsmTokenizer {t_nt_genome * 1e3:9.1f} ms")
    print(f"__call__       {t_call * 1e3:9.1f} ms  vs EsmTokenizer {t_nt_call * 1e3:9.1f} ms")
    print(f"Rust backend   {t_backend * 1e3:9.1f} ms")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
