"""The memory plan (``genolm plan``, ``genolm.training.plan``) against the measured peak of real training steps.

For three small shapes the script runs training steps on the CPU as the pretraining recipe does in one process
(forward, masked-LM loss, backward, gradient clipping, AdamW step) and measures the peak tensor memory of the
second step exactly, tensor by tensor (``torch.distributed._tools.mem_tracker.MemTracker``, not the process's
resident size); the estimate is the plan's per-device total for the same setting. The shapes cover the
recipe's CPU default (fp32, SDPA, sparse LM head), gradient checkpointing, and bf16 autocast with eager
attention and the LM head at every position (as under XLA).

With the XLA environment's Python (``--xla-python`` or ``GENOLM_XLA_PYTHON``) and
``benchmarks/sharded_init_memory.py`` present, that benchmark runs in a subprocess and its
``peak_host_memory_ratio_meta`` (peak host memory of a meta-device build and sharding, over the fp32 model
size) is reported as ``peak_host_memory_ratio``; otherwise it is null.

The last line printed is one JSON object: per-shape ``measured_bytes``, ``estimated_bytes`` and
``ratio`` (measured / estimated), ``max_rel_error`` (largest |estimated - measured| / measured; the goal is
<= 0.25) and ``peak_host_memory_ratio``.

    python benchmarks/memory_plan.py [--xla-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from genolm import GenoLMConfig
from genolm.training.config import PretrainConfig
from genolm.training.plan import measure_training_step, plan_pretraining

REPO = Path(__file__).resolve().parents[1]
SHARDED_INIT = REPO / "benchmarks" / "sharded_init_memory.py"

# name, preset, model overrides, pretraining settings (batch_size, max_tokens = sequence length - 1, ...)
SHAPES = [
    ("nt-v1 d64 L2, 8 x 257, fp32, sdpa, sparse head", "tiny", {},
     dict(batch_size=8, max_tokens=256)),
    ("nt-v2 d256 L4, 2 x 1025, fp32, sdpa, sparse head, gradient checkpointing", "nt-v2-50m",
     dict(hidden_size=256, num_attention_heads=4, intermediate_size=1024, num_hidden_layers=4),
     dict(batch_size=2, max_tokens=1024, gradient_checkpointing=True)),
    ("nt-v2 d128 L2, 4 x 513, bf16 autocast, eager, dense head", "nt-v2-50m",
     dict(hidden_size=128, num_attention_heads=4, intermediate_size=512, num_hidden_layers=2),
     dict(batch_size=4, max_tokens=512, attn_implementation="eager", mixed_precision="bf16",
          sparse_prediction=False)),
]


def compare(name: str, preset: str, overrides: dict, settings: dict) -> dict:
    cfg = PretrainConfig(model=preset, model_overrides=overrides, **settings)
    model_config = GenoLMConfig.from_preset(preset, **overrides)
    model_config._attn_implementation = cfg.attn_implementation
    plan = plan_pretraining(cfg, "cpu:1", model_config=model_config, backend="none", memory_limit=0)
    measured = measure_training_step(
        model_config, cfg.batch_size, cfg.max_tokens + 1, bf16=plan.bf16, sparse=plan.sparse,
        gradient_checkpointing=cfg.gradient_checkpointing, mlm_probability=cfg.mlm_probability,
    )
    return {
        "shape": name,
        "measured_bytes": measured["peak"],
        "estimated_bytes": plan.total,
        "ratio": measured["peak"] / plan.total,
        "estimate": {key: value for key, value in plan.memory.items()},
    }


def sharded_init_ratio(xla_python: str | None) -> float | None:
    """``peak_host_memory_ratio_meta`` of benchmarks/sharded_init_memory.py run by the XLA environment."""
    if not xla_python or not SHARDED_INIT.exists():
        return None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [xla_python, str(SHARDED_INIT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=3600
    )
    if done.returncode != 0:
        print(f"{SHARDED_INIT.name} failed (exit {done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        return None
    return json.loads(lines[-1]).get("peak_host_memory_ratio_meta")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--xla-python", default=os.environ.get("GENOLM_XLA_PYTHON"),
        help="python of the torch-xla environment, to run benchmarks/sharded_init_memory.py (default: $GENOLM_XLA_PYTHON)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for shape in SHAPES:
        row = compare(*shape)
        rows.append(row)
        mib = 2**20
        print(
            f"{row['shape']}: measured {row['measured_bytes'] / mib:.1f} MiB, estimated "
            f"{row['estimated_bytes'] / mib:.1f} MiB, ratio {row['ratio']:.3f}  (estimate: "
            + ", ".join(f"{k} {v / mib:.1f}" for k, v in row["estimate"].items()) + ")",
            flush=True,
        )
    result = {
        "shapes": [{k: v for k, v in row.items() if k != "estimate"} for row in rows],
        "max_rel_error": max(abs(r["estimated_bytes"] - r["measured_bytes"]) / r["measured_bytes"] for r in rows),
        "peak_host_memory_ratio": sharded_init_ratio(args.xla_python),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
