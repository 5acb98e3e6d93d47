"""Distributed training: the one package of genolm that imports ``torch.distributed``, ``torch_xla`` and FSDP.

:func:`setup` returns a :class:`Runtime`, one class per backend (``resolve_backend`` picks one for
``--parallel auto``); both recipes run their loop through it and never ask which backend it is:

- ``none`` (:class:`SingleProcessRuntime`): one process, one device (CPU, or one GPU).
- ``ddp`` (:class:`DDPRuntime`): data parallel over processes started by ``accelerate launch`` / ``torchrun``
  (Accelerate's DDP; gloo on CPUs, NCCL on GPUs).
- ``fsdp`` (:class:`FSDP2Runtime`): PyTorch FSDP2 (``fully_shard``) over the same processes, each
  ``_no_split_modules`` layer (``GenoLMLayer``) one unit; GPUs or CPUs.
- ``xla_fsdp`` (:class:`XLAFSDPRuntime`): torch-xla SPMD with ``SpmdFullyShardedDataParallel`` (FSDPv2), one
  process per host driving all of its devices (TPU).

``rt.prepare(model, make_optimizer, compile=True)`` compiles each transformer layer with ``torch.compile``
(:func:`compile_layers`) before the backend wraps or shards it (torchtitan's order: every compiled layer is one
FSDP2 unit); under XLA, which compiles the step's graph anyway, the switch does nothing.

What differs between backends is a method or a class attribute of the runtime: ``static_shapes`` (pad batches
to one shape), ``sparse_lm_head``, ``device_batches`` / ``data_loader``, ``model_state_dict`` (gathering
shards), ``compile_count``, ``sharding_summary``. Device and dtype choices for inference live in
:mod:`genolm.parallel.devices`.

Both Accelerate and transformers switch themselves to XLA whenever ``torch_xla`` can be imported. genolm
decides instead: for every backend but ``xla_fsdp`` :func:`keep_accelerate_off_xla` turns that detection off,
so a CPU or GPU run on a machine that merely has torch-xla installed stays a CPU or GPU run, and ``auto``
picks XLA only when an accelerator is there.

The boundary: torch-xla's SPMD is its own world (lazy tensors, a mesh of its own, its own FSDP wrapper),
which is why :class:`XLAFSDPRuntime` shares little with the others. TorchTPU (``torch_tpu`` on PyPI, the
successor of torch-xla) runs eager PyTorch on TPUs with ``torch.distributed`` and DTensor; a backend for it
would be one more class reusing :class:`FSDP2Runtime`'s ``fully_shard`` / DTensor code with a TPU device and
process group, not another XLA class.

Checkpoints key weights and optimizer states by parameter name (the names of the unwrapped Hugging Face
model) whatever the backend: consolidated ones hold them full and on the CPU (``model_state_dict``,
``optimizer_state_dict``); sharded ones are written by every process with ``torch.distributed.checkpoint``
(``save_sharded`` / ``load_sharded``; torch-xla's SPMD planners under ``xla_fsdp``), so a checkpoint of one
backend and number of processes or devices loads into any other.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import warnings

from .base import Runtime, compile_layers, transformer_layers
from .ddp import DDPRuntime, SingleProcessRuntime
from .devices import resolve_device, resolve_dtype, resolve_mixed_precision
from .fsdp import FSDP2Runtime
from .state import clean_name
from .tensor_parallel import FSDP_AXIS, MODEL_AXIS, check_mesh
from .xla import XLAFSDPRuntime

BACKENDS = ("none", "ddp", "fsdp", "xla_fsdp")
RUNTIMES: dict[str, type[Runtime]] = {
    "none": SingleProcessRuntime,
    "ddp": DDPRuntime,
    "fsdp": FSDP2Runtime,
    "xla_fsdp": XLAFSDPRuntime,
}


# ------------------------------------------------------------------------------------------------------
# backend selection
# ------------------------------------------------------------------------------------------------------
def torch_xla_installed() -> bool:
    return importlib.util.find_spec("torch_xla") is not None


def tpu_present() -> bool:
    """TPU chips visible to this host (TPU VMs expose /dev/accel* or /dev/vfio/N)."""
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def resolve_backend(requested: str = "auto") -> str:
    """The backend to use. ``auto``: ``xla_fsdp`` when torch-xla is installed and a TPU is present or
    ``PJRT_DEVICE`` names an accelerator (``TPU``, ...); ``fsdp`` under an Accelerate FSDP config; ``ddp``
    when started as several processes; else ``none``.

    ``PJRT_DEVICE=CPU`` (XLA's virtual CPU devices) is not enough for ``auto``: importing torch-xla sets it
    by itself on any machine without a TPU, so XLA on CPU devices needs ``--parallel xla_fsdp``."""
    from ..errors import ConfigError

    if requested != "auto":
        if requested not in BACKENDS:
            raise ConfigError(f"parallel={requested!r}; expected auto or one of {', '.join(BACKENDS)}")
        if requested == "xla_fsdp" and not torch_xla_installed():
            raise ConfigError("parallel=xla_fsdp needs torch_xla (pip install 'genolm[xla]')")
        return requested
    pjrt_device = os.environ.get("PJRT_DEVICE", "").upper()
    if torch_xla_installed() and ((pjrt_device and pjrt_device != "CPU") or tpu_present()):
        return "xla_fsdp"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"):
        return "fsdp"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "ddp"
    return "none"


def keep_accelerate_off_xla() -> None:
    """Stop Accelerate and transformers from treating this process as an XLA job because torch_xla is
    importable (their documented switch is ``USE_TORCH_XLA=0``, read once at import, so the already
    imported flags are reset too)."""
    os.environ["USE_TORCH_XLA"] = "0"  # for child processes
    import accelerate.utils.imports as accelerate_imports
    import transformers.utils.import_utils as transformers_imports

    accelerate_imports.USE_TORCH_XLA = False
    accelerate_imports._torch_xla_available = False
    accelerate_imports.is_torch_xla_available.cache_clear()
    transformers_imports.USE_TORCH_XLA = "0"
    cache_clear = getattr(transformers_imports.is_torch_xla_available, "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


def setup(
    backend: str,
    mixed_precision: str = "auto",
    project_dir: str | None = None,
    report_to: str = "none",
    tensor_parallel: int = 1,
) -> Runtime:
    """Start the backend (``resolve_backend`` output) and return its :class:`Runtime`.

    ``mixed_precision``: ``auto`` (bf16 on GPUs and TPUs, none on CPUs), ``no``, ``bf16`` (``fp16`` under
    ``none`` / ``ddp`` only). Under ``xla_fsdp`` this calls ``torch_xla.runtime.use_spmd()`` first, before
    any XLA tensor exists. ``report_to`` names the Accelerate trackers (``tensorboard``, ``wandb``, ``all``
    or ``none``). ``fsdp`` in a single process shards nothing and runs as ``none`` (with a warning).
    ``tensor_parallel`` N > 1 (``fsdp`` and ``xla_fsdp``): a 2-D mesh (devices / N, N) whose second axis
    splits each layer Megatron-style (:mod:`genolm.parallel.tensor_parallel`).
    """
    from ..errors import ConfigError

    if backend not in BACKENDS:
        raise ConfigError(f"parallel={backend!r}; expected one of {', '.join(BACKENDS)}")
    check_mesh(tensor_parallel, backend)  # the device count is checked when the backend starts
    log_with = {"none": None, "all": ["tensorboard", "wandb"]}.get(report_to, [report_to])
    if log_with and "wandb" in log_with:
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("report_to=wandb needs the wandb package: pip install 'genolm[wandb]'")
        # Without credentials wandb records offline (``wandb sync`` uploads later); it needs no network.
        os.environ.setdefault("WANDB_MODE", "offline" if not os.environ.get("WANDB_API_KEY") else "online")
        if project_dir:
            os.environ.setdefault("WANDB_DIR", project_dir)
    if backend == "xla_fsdp":
        runtime = XLAFSDPRuntime.start(mixed_precision, tensor_parallel)
        if runtime.is_main_process and log_with:  # trackers only, on the host's CPU
            keep_accelerate_off_xla()
            from accelerate import Accelerator

            runtime.accelerator = Accelerator(cpu=True, log_with=log_with, project_dir=project_dir)
        return runtime

    if torch_xla_installed():
        keep_accelerate_off_xla()
    import torch

    mixed_precision = resolve_mixed_precision(mixed_precision, "cuda" if torch.cuda.is_available() else "cpu")
    if backend == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        check_mesh(tensor_parallel, backend, num_devices=1)
        warnings.warn("parallel=fsdp in a single process shards nothing; running as parallel=none", stacklevel=2)
        backend = "none"
    if backend == "fsdp":
        return FSDP2Runtime.start(mixed_precision, log_with, project_dir, tensor_parallel=tensor_parallel)
    return RUNTIMES[backend].start(mixed_precision, log_with, project_dir)


__all__ = [
    "BACKENDS",
    "FSDP_AXIS",
    "MODEL_AXIS",
    "DDPRuntime",
    "FSDP2Runtime",
    "Runtime",
    "SingleProcessRuntime",
    "XLAFSDPRuntime",
    "clean_name",
    "compile_layers",
    "keep_accelerate_off_xla",
    "resolve_backend",
    "resolve_device",
    "resolve_dtype",
    "resolve_mixed_precision",
    "setup",
    "torch_xla_installed",
    "transformer_layers",
    "tpu_present",
]
