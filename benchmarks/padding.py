"""Padding saved by length-bucketed batching on fine-tuning tables (``genolm.batching``).

Each table's sequences are tokenized as the fine-tuning recipe does (``<cls>`` + k-mer tokens, truncated to
``--max-length``); one pass of shuffled batches is counted with and without bucketing: the token positions a
model computes when every batch is padded to its longest input. Without arguments the tables are those of
the Plant Genomic Benchmark subsets in ``../shared/data/pgb``.

    python benchmarks/padding.py [TABLE ...] [--batch-size 8 32] [--max-length 1000]

The last line printed is a JSON object: per table and batch size the real tokens, the padded positions of
both batchings and the ``saving`` (fraction of the plain batches' positions that bucketing leaves out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genolm import GenoLMTokenizer
from genolm.batching import padding_saving
from genolm.finetune import load_records

PGB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pgb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="*", type=Path, help="CSV / JSONL tables (default: the PGB subsets)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--max-length", type=int, default=1000, help="tokens per input, <cls> included")
    args = parser.parse_args()
    tables = args.tables or sorted(p for p in PGB.glob("*/*") if p.suffix in (".csv", ".jsonl"))
    tokenizer = GenoLMTokenizer()
    results = []
    for table in tables:
        sequences = load_records(table).sequences
        lengths = [min(len(ids), args.max_length) for ids in tokenizer(sequences, add_special_tokens=True)["input_ids"]]
        for batch_size in args.batch_size:
            saving = padding_saving(lengths, batch_size)
            name = f"{table.parent.name}/{table.name}"
            print(f"{name:55s} batch {batch_size:3d}: {len(lengths)} rows, {min(lengths)}-{max(lengths)} tokens, "
                  f"saving {saving['saving']:.1%}")  # fmt: skip
            results.append({"table": name, "batch_size": batch_size, "rows": len(lengths), **saving})
    print(json.dumps({"benchmark": "padding", "max_length": args.max_length, "tables": results}))


if __name__ == "__main__":
    main()
