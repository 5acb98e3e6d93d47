"""``genolm plan``: per-device memory and time estimate of a pretraining configuration on some devices."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEVICE_NAMES = "tpu-v4, tpu-v5e, tpu-v5p, tpu-v6e, a100-40, a100-80, h100, h100-pcie, h200, gh200, b200, l4, l40s, cpu"


def plan_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``genolm plan``: what a pretraining run needs per device, and how long it takes."""
    parser = subparsers.add_parser(
        "plan",
        help="estimate per-device memory and training time of a pretraining config on some devices",
        description="Estimate what a pretraining configuration needs per device (parameters, gradients, AdamW "
        "state, the backend's weight copies, activations) and its time to a token budget at an assumed MFU. "
        "recipes/pretrain.py prints the same plan at start and stops when it does not fit.",
    )
    parser.add_argument(
        "--config", required=True,
        help="pretraining config (YAML, e.g. recipes/configs/genolm-20b-tpu-v4.yaml) or a preset name (genolm-5b)",
    )
    parser.add_argument(
        "--devices", required=True,
        help=f"KIND[:COUNT], e.g. tpu-v4:512 or h100:16; KIND one of {DEVICE_NAMES}",
    )
    parser.add_argument("--tensor-parallel", type=int, default=None, help="devices per tensor-parallel group (default: the config's, else 1)")
    parser.add_argument("--parallel", default=None, help="backend: none, ddp, fsdp, xla_fsdp (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per device per micro-batch (default: the config's)")
    parser.add_argument(
        "--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
        help="recompute layer activations in the backward pass (default: the config's)",
    )
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed model-FLOPs utilisation (default: 0.4)")
    parser.add_argument(
        "--tokens", type=float, default=None, help="token budget of the time estimate, e.g. 300e9 (default: max_steps steps)"
    )
    parser.add_argument(
        "--memory-limit-gib", type=float, default=None,
        help="memory per device to compare with (default: the device's; cpu: this host's available memory)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_plan)
    return parser


def load_config(spec: str):
    """A ``PretrainConfig`` from a YAML file, or the defaults with ``model`` = a preset name."""
    from genolm.configuration_genolm import PRESETS
    from genolm.errors import ConfigError
    from genolm.training.config import PretrainConfig, config_from_dict, load_yaml

    if Path(spec).is_file():
        return config_from_dict(load_yaml(spec), origin=spec)
    if spec in PRESETS:
        return PretrainConfig(model=spec)
    raise ConfigError(f"--config {spec!r}: no such file, nor a preset ({', '.join(PRESETS)})")


def run_plan(args: argparse.Namespace) -> int:
    import dataclasses

    from genolm.errors import ConfigError
    from genolm.training.plan import GiB, check_mfu, parse_devices, plan_pretraining

    devices = parse_devices(args.devices)  # a bad spec fails before the config is read
    check_mfu(args.mfu)
    if args.tokens is not None and not args.tokens > 0:
        raise ConfigError(f"--tokens must be > 0, got {args.tokens}")
    if args.tensor_parallel is not None and args.tensor_parallel < 1:
        raise ConfigError(f"--tensor-parallel must be >= 1, got {args.tensor_parallel}")
    cfg = load_config(args.config)
    changes = {}
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.gradient_checkpointing is not None:
        changes["gradient_checkpointing"] = args.gradient_checkpointing
    if args.parallel is not None:
        changes["parallel"] = args.parallel
    if changes:
        cfg = dataclasses.replace(cfg, **changes)  # validated again by __post_init__
    limit = None if args.memory_limit_gib is None else (args.memory_limit_gib * GiB or -1)
    plan = plan_pretraining(
        cfg, devices, tensor_parallel=args.tensor_parallel, mfu=args.mfu, tokens=args.tokens, memory_limit=limit,
    )
    if args.json:
        print(json.dumps(plan.to_dict(), indent=1))
        return 0
    print(plan.format())
    if plan.fits:
        print("fits: yes")
    else:
        try:
            plan.check()
        except ConfigError as err:
            print(f"fits: no: {err}")
    return 0
