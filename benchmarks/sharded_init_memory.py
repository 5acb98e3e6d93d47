"""Peak host memory of building and sharding a preset under ``xla_fsdp``: an eager build (the whole model on
the host, then copied to the devices) against a meta-device build materialised in its shards on the devices.

Runs in the XLA environment; each measurement is a fresh subprocess on PJRT CPU devices (whose "device" memory
is host memory too, so ~1x the fp32 size plus runtime overhead is the floor there; on a TPU host the meta
build leaves the host nearly untouched). The peak is the process's maximum resident set size
(``resource.getrusage``) minus its resident size just before the model is built, as a ratio to the model's
fp32 size.

    PYTHONPATH=. python benchmarks/sharded_init_memory.py --model nt-v2-500m --devices 4

The last printed line is one JSON object: ``peak_host_memory_ratio_eager``, ``peak_host_memory_ratio_meta``,
``fp32_bytes`` and the raw numbers of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(model_name: str, mode: str, tensor_parallel: int) -> dict:
    """Build ``model_name`` (eagerly or on the meta device), shard it with the xla_fsdp runtime, and report
    the memory numbers."""
    import torch
    import torch_xla

    from genolm import GenoLMConfig, GenoLMForMaskedLM, parallel

    rt = parallel.setup("xla_fsdp", mixed_precision="no", tensor_parallel=tensor_parallel)
    config = GenoLMConfig.from_preset(model_name)
    torch.manual_seed(0)
    before = _rss_bytes()
    start = time.perf_counter()
    if mode == "meta":
        with torch.device("meta"):
            model = GenoLMForMaskedLM(config)
    else:
        model = GenoLMForMaskedLM(config)
    fp32_bytes = sum(p.numel() for p in model.parameters()) * 4
    model, _ = rt.prepare(model, lambda m: None)
    torch_xla.sync()
    torch_xla._XLAC._xla_wait_device_ops([])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    sharded = sum(1 for spec in rt.sharding_summary(model).values() if spec != "replicated")
    return {
        "mode": mode,
        "fp32_bytes": fp32_bytes,
        "rss_before_bytes": before,
        "peak_rss_bytes": peak,
        "rss_after_bytes": _rss_bytes(),
        "peak_ratio": (peak - before) / fp32_bytes,
        "seconds": round(seconds, 1),
        "sharded_parameters": sharded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nt-v2-500m", help="GenoLMConfig preset")
    parser.add_argument("--devices", type=int, default=4, help="PJRT CPU devices")
    parser.add_argument("--tensor_parallel", type=int, default=1)
    parser.add_argument("--child", choices=("eager", "meta"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.child, args.tensor_parallel)))
        return

    env = {**os.environ, "PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": str(args.devices), "PYTHONPATH": str(REPO)}
    runs = {}
    for mode in ("eager", "meta"):
        command = [sys.executable, __file__, "--model", args.model, "--tensor_parallel", str(args.tensor_parallel),
                   "--child", mode]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{mode} run failed:\n{done.stderr[-3000:]}")
        runs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(mode, runs[mode], flush=True)
    print(
        json.dumps(
            {
                "model": args.model,
                "devices": args.devices,
                "tensor_parallel": args.tensor_parallel,
                "fp32_bytes": runs["eager"]["fp32_bytes"],
                "peak_host_memory_ratio_eager": round(runs["eager"]["peak_ratio"], 3),
                "peak_host_memory_ratio_meta": round(runs["meta"]["peak_ratio"], 3),
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
