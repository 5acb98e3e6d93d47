"""Distributed training: the one module of genolm that imports ``torch.distributed``, ``torch_xla`` and FSDP.

Backends (``resolve_backend`` picks one for ``--parallel auto``):

- ``none``: one process, one device (CPU, or one GPU).
- ``ddp``: data parallel over processes started by ``accelerate launch`` / ``torchrun`` (Accelerate's DDP).
- ``fsdp``: Accelerate's FSDP version 2 (``fully_shard``), wrapping each ``_no_split_modules`` layer
  (``GenoLMLayer``) as one unit; launch with ``recipes/accelerate/gpu_fsdp.yaml``.
- ``xla_fsdp``: torch-xla SPMD with ``SpmdFullyShardedDataParallel`` (FSDPv2). One process per host drives all
  of its devices; a mesh over every device of the slice has the axes ``(FSDP_AXIS, MODEL_AXIS)`` =
  ``(n_devices, 1)``; parameters are sharded along ``FSDP_AXIS`` (each ``GenoLMLayer`` a unit), batches are
  sharded along the batch dimension. Accelerate does not wrap models in XLA FSDP (its ``fsdp_config`` is
  ignored under XLA), which is why genolm shards the model itself here.

Both Accelerate and transformers switch themselves to XLA whenever ``torch_xla`` can be imported. genolm
decides instead: for every backend but ``xla_fsdp`` :func:`keep_accelerate_off_xla` turns that detection off,
so a CPU or GPU run on a machine that merely has torch-xla installed stays a CPU or GPU run.

Optimizer states are checkpointed in one portable form, keyed by parameter name (the names of the
unwrapped Hugging Face model), full (unsharded) and on the CPU, whatever the backend.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

BACKENDS = ("none", "ddp", "fsdp", "xla_fsdp")
FSDP_AXIS = "fsdp"  # mesh axis parameters and batches are sharded over
MODEL_AXIS = "model"  # size 1: room for tensor parallelism later
# Name pieces that wrappers add to parameter names; removed to get the Hugging Face model's names.
_WRAPPER_PARTS = ("_orig_module", "_checkpoint_wrapped_module", "_fsdp_wrapped_module")


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
    if requested != "auto":
        if requested not in BACKENDS:
            raise ValueError(f"parallel={requested!r}; expected auto or one of {BACKENDS}")
        if requested == "xla_fsdp" and not torch_xla_installed():
            raise ValueError("parallel=xla_fsdp needs torch_xla (pip install 'genolm[xla]')")
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


def clean_name(name: str) -> str:
    """Parameter name without the pieces that DDP / FSDP / checkpoint wrappers insert."""
    if name.startswith("module."):  # DDP
        name = name[len("module.") :]
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_PARTS)


# ------------------------------------------------------------------------------------------------------
# the runtime
# ------------------------------------------------------------------------------------------------------
@dataclass
class Runtime:
    """Where and how the training step runs. Create with :func:`setup`.

    Attributes:
        backend: one of ``BACKENDS``.
        device: where batches go.
        mixed_precision: ``"no"`` or ``"bf16"``.
        process_index, num_processes: this process among the job's processes (hosts under XLA SPMD).
        num_devices: accelerators computing the global batch (for tokens/s per device and MFU).
        local_devices: devices this process feeds; its host batch is ``batch_size * local_devices`` (more
            than 1 only under XLA SPMD, where one process drives every device of its host).
        device_kind: key of ``genolm.training.flops.PEAK_FLOPS``, ``"cpu"``, or None when unknown.
        accelerator: the Accelerate ``Accelerator`` (device placement for none/ddp/fsdp; trackers always).
        mesh: the SPMD mesh under ``xla_fsdp``.
    """

    backend: str
    device: torch.device
    mixed_precision: str
    process_index: int = 0
    num_processes: int = 1
    num_devices: int = 1
    local_devices: int = 1
    device_kind: str | None = None
    accelerator: Any = None
    mesh: Any = None
    _trackers_on: bool = field(default=False, repr=False)

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    @property
    def is_xla(self) -> bool:
        return self.backend == "xla_fsdp"

    # -- model and optimizer ------------------------------------------------------------------
    def prepare(
        self, model: nn.Module, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Wrap/shard ``model`` for the backend and build its optimizer with ``make_optimizer(model)``."""
        if self.is_xla:
            model = _xla_shard_model(model, self.mesh)
            return model, make_optimizer(model)
        optimizer = make_optimizer(model)
        return self.accelerator.prepare(model, optimizer)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The Hugging Face model inside the wrappers (under XLA its layers stay wrapped)."""
        if self.is_xla:
            return model.module
        return self.accelerator.unwrap_model(model)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for the forward pass (Accelerate's prepared model autocasts itself)."""
        if self.is_xla and self.mixed_precision == "bf16":
            return torch.autocast("xla", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def no_sync(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on micro-batches that are not the last of an accumulation (DDP)."""
        if sync or self.backend != "ddp":
            return contextlib.nullcontext()
        return self.accelerator.no_sync(model)

    def backward(self, loss: torch.Tensor) -> None:
        if self.is_xla:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        """Clip to ``max_norm`` (0: no clipping) and return the total gradient norm (a device tensor)."""
        max_norm = max_norm if max_norm and max_norm > 0 else math.inf
        if self.is_xla:
            return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        return self.accelerator.clip_grad_norm_(model.parameters(), max_norm)

    def step_end(self) -> None:
        """End of an optimizer step: under XLA, cut the lazy graph here and run it (one graph per step)."""
        if self.is_xla:
            import torch_xla

            torch_xla.sync()

    # -- data ---------------------------------------------------------------------------------
    def device_batches(self, batches: Iterable[Mapping[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
        """Move host batches to the device. Under XLA through the parallel device loader, which prefetches
        and shards each batch over ``FSDP_AXIS`` along its first dimension."""
        if self.is_xla:
            import torch_xla.distributed.parallel_loader as pl
            import torch_xla.distributed.spmd as xs

            sharding = xs.ShardingSpec(self.mesh, (FSDP_AXIS, None), minibatch=self.num_processes > 1)
            yield from pl.MpDeviceLoader(batches, self.device, input_sharding=sharding)
            return
        for batch in batches:
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def to_device(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One batch to the device (evaluation path; sharded over the batch dimension under XLA)."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.is_xla:
            import torch_xla.distributed.spmd as xs

            for value in batch.values():
                xs.mark_sharding(value, self.mesh, (FSDP_AXIS,) + (None,) * (value.dim() - 1))
        return batch

    # -- state --------------------------------------------------------------------------------
    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Full (consolidated) CPU weights under the Hugging Face model's parameter names."""
        if self.is_xla:
            self.step_end()
            return {clean_name(k): self._host_copy(v) for k, v in self.unwrap(model).state_dict().items()}
        state = self.accelerator.get_state_dict(model)  # gathers FSDP shards on the main process
        return {clean_name(k): v for k, v in (state or {}).items()}

    def optimizer_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Optimizer state keyed by parameter name, full and on the CPU (portable across backends)."""
        if self.backend == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            state = get_optimizer_state_dict(model, optimizer, options=options)
            return _rename_optimizer_state(state, clean_name)
        if self.is_xla:
            self.step_end()
        names = {id(p): clean_name(n) for n, p in model.named_parameters()}
        return _named_optimizer_state(optimizer, names, self._host_copy if self.is_xla else None)

    def _host_copy(self, tensor: torch.Tensor) -> torch.Tensor:
        """Full CPU copy of an XLA tensor. ``.cpu()`` of an SPMD-sharded tensor compiles a gather graph per
        shape; on one host the shards are all local, so they are copied and assembled without compiling."""
        import torch_xla
        from torch_xla.distributed.spmd.xla_sharding import wrap_as_sharded_tensor

        tensor = tensor.detach()
        if tensor.device.type != "xla" or self.num_processes > 1 or not torch_xla._XLAC._get_xla_sharding_spec(tensor):
            return tensor.cpu()
        full = torch.empty(tensor.shape, dtype=tensor.dtype)
        for shard in wrap_as_sharded_tensor(tensor).local_shards:
            if shard.indices is Ellipsis:
                return shard.data.clone()
            full[tuple(shard.indices)] = shard.unpadded_data
        return full

    def load_optimizer_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Inverse of :meth:`optimizer_state_dict`."""
        if self.backend == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            # torch.distributed.checkpoint keys parameters by their canonical names (no wrapper prefixes).
            set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
            return
        params = {clean_name(n): p for n, p in model.named_parameters()}
        _load_named_optimizer_state(optimizer, params, state)
        if self.is_xla:
            _xla_shard_optimizer_state(optimizer, self.mesh)

    def compile_count(self) -> int | None:
        """Cumulative XLA graph compilations of this process (None off XLA)."""
        if not self.is_xla:
            return None
        import torch_xla.debug.metrics as met

        data = met.metric_data("CompileTime")
        return int(data[0]) if data else 0

    def sharding_summary(self, model: nn.Module) -> dict[str, str]:
        """Parameter name -> its sharding (XLA's OpSharding text; ``replicated`` for whole tensors)."""
        if not self.is_xla:
            return {}
        import torch_xla

        return {
            clean_name(n): (torch_xla._XLAC._get_xla_sharding_spec(p) or "replicated") for n, p in model.named_parameters()
        }

    def wait_for_everyone(self) -> None:
        if self.is_xla:
            import torch_xla.core.xla_model as xm

            if self.num_processes > 1:
                xm.rendezvous("genolm")
        else:
            self.accelerator.wait_for_everyone()

    def gather_object(self, obj: Any) -> list[Any]:
        """``obj`` of every process, in process order (each XLA host keeps only its own)."""
        if self.is_xla or self.num_processes == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a per-process scalar over processes (SPMD values are already global)."""
        if self.is_xla or self.num_processes == 1:
            return value
        return self.accelerator.reduce(value, reduction="mean")

    # -- trackers -----------------------------------------------------------------------------
    def init_trackers(self, project: str, config: dict[str, Any]) -> None:
        if self.accelerator is not None and self.accelerator.log_with and self.is_main_process:
            self.accelerator.init_trackers(project, config=_flat_config(config))
            self._trackers_on = True

    def log(self, values: dict[str, Any], step: int) -> None:
        if self._trackers_on:
            self.accelerator.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    def end(self) -> None:
        if self._trackers_on:
            self.accelerator.end_training()


def setup(
    backend: str,
    mixed_precision: str = "auto",
    project_dir: str | None = None,
    report_to: str = "none",
    gradient_accumulation_steps: int = 1,
) -> Runtime:
    """Start the backend (``resolve_backend`` output) and return its :class:`Runtime`.

    Under ``xla_fsdp`` this calls ``torch_xla.runtime.use_spmd()`` first, before any XLA tensor exists.
    ``report_to`` names the Accelerate trackers (``tensorboard``, ``wandb``, ``all`` or ``none``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; expected one of {BACKENDS}")
    log_with = {"none": None, "all": ["tensorboard", "wandb"]}.get(report_to, [report_to])
    if log_with and "wandb" in log_with:
        if importlib.util.find_spec("wandb") is None:
            raise ValueError("report_to=wandb needs the wandb package: pip install 'genolm[wandb]'")
        # Without credentials wandb records offline (``wandb sync`` uploads later); it needs no network.
        os.environ.setdefault("WANDB_MODE", "offline" if not os.environ.get("WANDB_API_KEY") else "online")
        if project_dir:
            os.environ.setdefault("WANDB_DIR", project_dir)
    if backend == "xla_fsdp":
        runtime = _setup_xla(mixed_precision)
        if runtime.is_main_process and log_with:
            keep_accelerate_off_xla()
            from accelerate import Accelerator

            runtime.accelerator = Accelerator(cpu=True, log_with=log_with, project_dir=project_dir)
        return runtime

    if torch_xla_installed():
        keep_accelerate_off_xla()
    from accelerate import Accelerator

    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() else "no"
    kwargs: dict[str, Any] = {}
    if backend == "fsdp" and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() not in ("1", "true"):
        # Started without an Accelerate FSDP config: FSDP2 wrapping each _no_split_modules layer.
        from accelerate import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap", reshard_after_forward=True
        )
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        log_with=log_with,
        project_dir=project_dir,
        cpu=not torch.cuda.is_available(),
        **kwargs,
    )
    device = accelerator.device
    if backend == "fsdp" and accelerator.distributed_type.value != "FSDP":
        # Accelerate uses FSDP on GPUs only; elsewhere it falls back to plain data parallelism.
        warnings.warn(
            f"FSDP is not available on {device.type}; training with {accelerator.distributed_type.value}", stacklevel=2
        )
        backend = "ddp" if accelerator.num_processes > 1 else "none"
    if device.type == "cuda":
        from .training.flops import gpu_kind

        device_kind = gpu_kind(torch.cuda.get_device_name(device))
    else:
        device_kind = "cpu"
    return Runtime(
        backend=backend,
        device=device,
        mixed_precision=mixed_precision,
        process_index=accelerator.process_index,
        num_processes=accelerator.num_processes,
        num_devices=accelerator.num_processes,
        device_kind=device_kind,
        accelerator=accelerator,
    )


# ------------------------------------------------------------------------------------------------------
# torch-xla SPMD FSDPv2
# ------------------------------------------------------------------------------------------------------
def _setup_xla(mixed_precision: str) -> Runtime:
    import numpy as np
    import torch_xla
    import torch_xla.distributed.spmd as xs
    import torch_xla.runtime as xr

    xr.use_spmd()  # before any XLA tensor is created
    num_devices = xr.global_runtime_device_count()
    mesh = xs.Mesh(np.arange(num_devices), (num_devices, 1), (FSDP_AXIS, MODEL_AXIS))
    xs.set_global_mesh(mesh)
    device_type = xr.device_type()
    if device_type == "TPU":
        version = getattr(getattr(torch_xla, "tpu", None), "version", lambda: None)()
        device_kind = f"tpu-v{version}" if version else None
    elif device_type == "CPU":
        device_kind = "cpu"
    else:
        device_kind = None
    if mixed_precision == "auto":
        mixed_precision = "bf16" if device_type != "CPU" else "no"
    return Runtime(
        backend="xla_fsdp",
        device=torch_xla.device(),
        mixed_precision=mixed_precision,
        process_index=xr.process_index(),
        num_processes=xr.process_count(),
        num_devices=num_devices,
        local_devices=xr.addressable_runtime_device_count(),
        device_kind=device_kind,
        mesh=mesh,
    )


def _shard_output(output: Any, mesh: Any) -> None:
    """Shard a wrapped module's output over ``FSDP_AXIS`` along the batch dimension. Inner layers return
    tuples ``(hidden_states, attention_weights_or_None)``, the root a ``ModelOutput``, so any of tensor,
    tuple and mapping is accepted (torch-xla's default handles only a tensor or a tuple's first item)."""
    import torch_xla.distributed.spmd as xs

    if isinstance(output, torch.Tensor):
        tensors = [output]
    elif isinstance(output, Mapping):  # ModelOutput is an OrderedDict
        tensors = [v for v in output.values() if isinstance(v, torch.Tensor)]
    elif isinstance(output, (tuple, list)):
        tensors = [v for v in output if isinstance(v, torch.Tensor)]
    else:
        raise TypeError(f"cannot shard a module output of type {type(output).__name__}")
    for tensor in tensors:
        if tensor.dim() >= 2:  # (batch, ...) activations and logits; scalars (the loss) stay replicated
            xs.mark_sharding(tensor, mesh, (FSDP_AXIS,) + (None,) * (tensor.dim() - 1))


def _xla_shard_model(model: nn.Module, mesh: Any) -> nn.Module:
    from torch_xla.distributed.fsdp import checkpoint_module
    from torch_xla.distributed.fsdp.wrap import transformer_auto_wrap_policy
    from torch_xla.experimental.spmd_fully_sharded_data_parallel import SpmdFullyShardedDataParallel as FSDPv2

    layer_names = set(getattr(model, "_no_split_modules", None) or [])
    layer_classes = {type(m) for m in model.modules() if type(m).__name__ in layer_names}
    if not layer_classes:
        raise ValueError(f"{type(model).__name__} declares no _no_split_modules layers to shard")
    checkpointing = any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    if checkpointing:
        # transformers' checkpointing calls torch.utils.checkpoint, which XLA cannot use; torch-xla's
        # checkpoint_module wraps each layer instead.
        model.gradient_checkpointing_disable()

    def wrap_layer(module: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        if checkpointing:
            module = checkpoint_module(module)
        return FSDPv2(module, *args, **kwargs)

    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=layer_classes)
    return FSDPv2(
        model, mesh=mesh, shard_output=_shard_output, auto_wrap_policy=policy, auto_wrapper_callable=wrap_layer
    )


def _xla_shard_optimizer_state(optimizer: torch.optim.Optimizer, mesh: Any) -> None:
    """Give loaded optimizer states their parameter's sharding (they arrive replicated from the CPU)."""
    import torch_xla
    import torch_xla.distributed.spmd as xs
    from torch_xla.experimental.spmd_fully_sharded_data_parallel import _prepare_spmd_partition_spec

    for param, state in optimizer.state.items():
        if not torch_xla._XLAC._get_xla_sharding_spec(param):
            continue
        spec = _prepare_spmd_partition_spec(param, shard_maximal=True)
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                xs.mark_sharding(value, mesh, spec)


# ------------------------------------------------------------------------------------------------------
# name-keyed optimizer state
# ------------------------------------------------------------------------------------------------------
def _named_optimizer_state(
    optimizer: torch.optim.Optimizer,
    names: Mapping[int, str],
    to_cpu: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """``optimizer.state_dict()`` with parameter names instead of indices, tensors on the CPU."""
    to_cpu = to_cpu or (lambda t: t.detach().cpu())
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {
        names[id(p)]: {k: (to_cpu(v) if isinstance(v, torch.Tensor) else v) for k, v in optimizer.state[p].items()}
        for p in params
        if p in optimizer.state
    }
    groups = []
    for group in optimizer.param_groups:
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": [names[id(p)] for p in group["params"]]})
    return {"state": state, "param_groups": groups}


def _load_named_optimizer_state(
    optimizer: torch.optim.Optimizer, params: Mapping[str, torch.Tensor], named: Mapping[str, Any]
) -> None:
    order = [name for group in named["param_groups"] for name in group["params"]]
    current = [p for group in optimizer.param_groups for p in group["params"]]
    if len(order) != len(current):
        raise ValueError(f"checkpoint optimizer has {len(order)} parameters, the model {len(current)}")
    for name, param in zip(order, current):
        if params.get(name) is not param:
            raise ValueError(f"optimizer parameter order differs from the checkpoint at {name!r}")
    index = {name: i for i, name in enumerate(order)}
    state_dict = {
        "state": {index[name]: value for name, value in named["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in named["param_groups"]],
    }
    optimizer.load_state_dict(state_dict)


def _rename_optimizer_state(state: dict[str, Any], rename: Callable[[str], str]) -> dict[str, Any]:
    if not state:  # a full FSDP state dict offloaded to the CPU exists on rank 0 only
        return state
    return {
        "state": {rename(k): v for k, v in state["state"].items()},
        "param_groups": [{**g, "params": [rename(n) for n in g["params"]]} for g in state["param_groups"]],
    }


def _flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Trackers take scalar hyper-parameters: flatten dicts, stringify lists and None."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flat_config(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


__all__ = [
    "BACKENDS",
    "FSDP_AXIS",
    "MODEL_AXIS",
    "Runtime",
    "clean_name",
    "keep_accelerate_off_xla",
    "resolve_backend",
    "setup",
    "torch_xla_installed",
    "tpu_present",
]
