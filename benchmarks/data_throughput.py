"""Throughput of the genome window loader on a local bgzipped FASTA, with 1 and 2 dataloader workers.

By default the genome is built from the project's shared test data (../shared/data): the A. thaliana Chr5
excerpt and the rice Chr2 megabase, repeated under new record names up to ``--megabases``, bgzipped and
indexed. Pass ``--fasta`` to measure your own indexed bgzip FASTA instead.

The loader is ``genome_dataset(..., max_tokens=1000, shuffle=True, reverse_complement=0.5)`` in a
``torch.utils.data.DataLoader`` (batch 32). Tokens are the non-padding ids of each row (``<cls>``
included), counted from the first batch a loader delivers to its last one, so worker start-up is
excluded. The headline numbers use ``genolm.data.collate_windows`` (numpy batches, cheap to pass between
processes); the ``*_default_collate`` ones use torch's default collation into tensors, whose transfer
through shared memory costs more. The last line printed is a JSON object with ``tokens_per_s_1_worker``
and ``tokens_per_s_2_workers``.

    python benchmarks/data_throughput.py [--fasta GENOME.fa.gz] [--megabases 32] [--max-tokens 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pysam
import torch

from genolm.data import collate_windows, genome_dataset
from genolm.tokenization_genolm import GenoLMTokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def _bgzf(data: bytes, folder: Path) -> bytes:
    """``data`` as BGZF blocks, without the end-of-file marker (so pieces can be concatenated)."""
    from pysam.libcbgzf import BGZFile

    tmp = folder / "piece.gz"
    with BGZFile(str(tmp), "wb") as out:
        out.write(data)
    return tmp.read_bytes()[: -len(BGZF_EOF)]


def build_genome(folder: Path, megabases: int) -> Path:
    """Real plant sequence repeated under distinct record names, bgzipped and faidx-indexed.

    Each distinct sequence is compressed once; copies reuse its BGZF blocks behind their own header block.
    """
    bodies = []
    for name in ("athaliana_chr5_tail.fa.gz", "rice_chr2_1mb.fa.gz"):
        with pysam.FastaFile(str(SHARED / name)) as fasta:
            for ref in fasta.references:
                seq = fasta.fetch(ref)
                text = "\n".join(seq[i : i + 60] for i in range(0, len(seq), 60)) + "\n"
                bodies.append((len(seq), _bgzf(text.encode(), folder)))
    path = folder / "genome.fa.gz"
    total = copy = 0
    with open(path, "wb") as out:
        while total < megabases * 1_000_000:
            length, body = bodies[copy % len(bodies)]
            out.write(_bgzf(f">chr{copy + 1}\n".encode(), folder) + body)
            total += length
            copy += 1
        out.write(BGZF_EOF)
    pysam.faidx(str(path))
    return path


def measure(fasta: Path, tokenizer, workers: int, max_tokens: int, batch_size: int, collate) -> dict:
    ds = genome_dataset(
        fasta, tokenizer, max_tokens=max_tokens, split=None, shuffle=True, reverse_complement=0.5, num_shards=16
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    start = time.perf_counter()
    first = None
    tokens = rows = 0
    for batch in loader:
        if first is None:  # start the clock once the workers deliver
            first = time.perf_counter()
            continue
        tokens += int(batch["attention_mask"].sum())
        rows += len(batch["input_ids"])
    end = time.perf_counter()
    return {"tokens": tokens, "rows": rows, "wall_seconds": end - start, "tokens_per_s": tokens / (end - first)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", type=Path, default=None, help="indexed bgzip FASTA (default: built from shared data)")
    parser.add_argument("--megabases", type=int, default=32, help="size of the built genome (default: 32)")
    parser.add_argument("--max-tokens", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(1)
    tokenizer = GenoLMTokenizer()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        fasta = args.fasta or build_genome(Path(tmp), args.megabases)
        with pysam.FastaFile(str(fasta)) as handle:
            bases = sum(handle.lengths)
        for name, collate in (("", collate_windows), ("_default_collate", None)):
            for workers in (1, 2):
                result = measure(fasta, tokenizer, workers, args.max_tokens, args.batch_size, collate)
                results[f"{workers}{name}"] = result
                print(f"{workers} worker(s){name.replace('_', ' ')}: {result['tokens_per_s'] / 1e6:.2f} M tokens/s "
                      f"({result['rows']} windows, {result['wall_seconds']:.1f} s wall)", flush=True)
    print(json.dumps({
        "tokens_per_s_1_worker": round(results["1"]["tokens_per_s"]),
        "tokens_per_s_2_workers": round(results["2"]["tokens_per_s"]),
        "tokens_per_s_1_worker_default_collate": round(results["1_default_collate"]["tokens_per_s"]),
        "tokens_per_s_2_workers_default_collate": round(results["2_default_collate"]["tokens_per_s"]),
        "genome_bases": bases,
        "max_tokens": args.max_tokens,
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
