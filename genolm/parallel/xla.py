"""``xla_fsdp``: torch-xla SPMD with ``SpmdFullyShardedDataParallel`` (FSDPv2).

One process per host drives all of its devices; a mesh over every device of the slice has the axes
``(FSDP_AXIS, MODEL_AXIS)`` = ``(n_devices / tensor_parallel, tensor_parallel)``; parameters are sharded along
``FSDP_AXIS`` (each ``_no_split_modules`` layer a unit), batches are sharded along the batch dimension over
``FSDP_AXIS``. With ``tensor_parallel`` > 1 each layer's projections first get Megatron-style 2-D partition
specs (:mod:`genolm.parallel.tensor_parallel`); FSDPv2 leaves a parameter that already has a sharding as it
is and shards the others (norms, ...) over ``FSDP_AXIS``, so the two compose. A model built on the meta
device is materialised parameter by parameter on the device, sharded, then initialised there
(:func:`_materialise_sharded`): the full model never exists on the host. Accelerate does not wrap
models in XLA FSDP (its ``fsdp_config`` is ignored under XLA), which is why genolm shards the model itself.

XLA traces each step into a graph and compiles it once per input shape: batches keep one shape
(``static_shapes``), the masked-LM head projects every position (``sparse_lm_head`` False), and each optimizer
step ends with ``torch_xla.sync()``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import PrefetchedStates, Runtime, _max_norm, transformer_layers
from .meta_init import on_meta
from .state import clean_name, load_named_optimizer_state, named_optimizer_state, single_process_checkpoint
from .tensor_parallel import FSDP_AXIS, MODEL_AXIS, check_mesh, check_model, xla_partition_spec


class XLAFSDPRuntime(Runtime):
    backend = "xla_fsdp"
    static_shapes = True
    sparse_lm_head = False
    gradient_replicas = 1  # one global computation: losses and gradients are already over the global batch
    shards_parameters = True
    async_checkpoints = False  # the device shards are copied to the host first: save_sharded is synchronous

    def __init__(self, *args: Any, mesh: Any = None, tensor_parallel: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mesh = mesh
        self.tensor_parallel = tensor_parallel

    @property
    def sharded_checkpoints_unsupported(self) -> str | None:
        # torch-xla 2.9's SPMDSavePlanner writes no shard of a partially replicated tensor (a norm or bias split
        # over "fsdp" and replicated over "model"): its checkpoint would miss them.
        if self.tensor_parallel > 1:
            return "torch-xla's SPMD save planner drops partially replicated tensors under tensor_parallel > 1"
        return None

    @classmethod
    def start(cls, mixed_precision: str, tensor_parallel: int = 1) -> XLAFSDPRuntime:
        """Switch torch-xla to SPMD (before any XLA tensor exists) and build the mesh over every device:
        (devices / ``tensor_parallel``, ``tensor_parallel``), neighbouring devices in one model group."""
        import numpy as np
        import torch_xla
        import torch_xla.distributed.spmd as xs
        import torch_xla.runtime as xr

        xr.use_spmd()  # before any XLA tensor is created
        num_devices = xr.global_runtime_device_count()
        check_mesh(tensor_parallel, cls.backend, num_devices)
        shape = (num_devices // tensor_parallel, tensor_parallel)
        mesh = xs.Mesh(np.arange(num_devices), shape, (FSDP_AXIS, MODEL_AXIS))
        xs.set_global_mesh(mesh)
        device_type = xr.device_type()
        if device_type == "TPU":
            import torch_xla.core.xla_model as xm

            from ..training.flops import device_kind as peak_table_kind

            device_kind = peak_table_kind(xm.xla_device_kind())  # "TPU v4", "TPU v5 lite", "TPU v6 lite", ...
        elif device_type == "CPU":
            device_kind = "cpu"
        else:
            device_kind = None
        from .devices import resolve_mixed_precision

        mixed_precision = resolve_mixed_precision(mixed_precision, device_type)
        if mixed_precision not in ("no", "bf16"):
            raise ConfigError(f"mixed_precision={mixed_precision!r} with parallel=xla_fsdp; expected no or bf16")
        return cls(
            device=torch_xla.device(),
            mixed_precision=mixed_precision,
            process_index=xr.process_index(),
            num_processes=xr.process_count(),
            num_devices=num_devices,
            local_devices=xr.addressable_runtime_device_count(),
            device_kind=device_kind,
            mesh=mesh,
            tensor_parallel=tensor_parallel,
        )

    # -- model and optimizer ------------------------------------------------------------------
    def prepare(
        self,
        model: nn.Module,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        compile: bool = False,
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        # ``compile`` is ignored: XLA traces and compiles every step's graph anyway.
        model = _shard_model(model, self.mesh, self.tensor_parallel)
        return model, make_optimizer(model)

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.module  # its layers stay wrapped

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.mixed_precision == "bf16":
            return torch.autocast("xla", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), _max_norm(max_norm))

    def step_end(self) -> None:
        import torch_xla

        torch_xla.sync()  # the step's lazy graph is cut and executed here

    # -- data ---------------------------------------------------------------------------------
    def device_batches(self, batches: Iterable[Mapping[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
        """Through the parallel device loader, which prefetches on a thread and shards each (batch, tokens) tensor
        over ``FSDP_AXIS`` along its first dimension. A stream with ``iter_with_state`` (a ``BatchStream``) is
        told the state of each batch as that batch is handed on, so its ``state_dict()`` is the position of the
        last batch consumed, not of the last one prefetched."""
        import torch_xla.distributed.parallel_loader as pl
        import torch_xla.distributed.spmd as xs

        sharding = xs.ShardingSpec(self.mesh, (FSDP_AXIS, None), minibatch=self.num_processes > 1)
        if not hasattr(batches, "iter_with_state"):
            yield from pl.MpDeviceLoader(batches, self.device, input_sharding=sharding)
            return
        states = PrefetchedStates(batches)
        for batch in pl.MpDeviceLoader(states.host_batches(), self.device, input_sharding=sharding):
            states.consumed()
            yield batch

    def to_device(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One batch to the device, every tensor sharded over ``FSDP_AXIS`` along its first dimension."""
        import torch_xla.distributed.spmd as xs

        batch = {k: v.to(self.device) for k, v in batch.items()}
        for value in batch.values():
            xs.mark_sharding(value, self.mesh, (FSDP_AXIS,) + (None,) * (value.dim() - 1))
        return batch

    def data_loader(
        self,
        dataset: Any,
        batch_size: int,
        collate_fn: Callable,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
        num_workers: int = 0,
        lengths: Sequence[int] | None = None,
    ) -> Iterable[dict[str, torch.Tensor]]:
        if self.num_processes > 1:
            raise NotImplementedError("data_loader under xla_fsdp feeds one host; several hosts need a sharded dataset")
        # ``lengths`` is ignored: every batch is padded to one static shape, so bucketing saves nothing.
        from torch.utils.data import DataLoader

        loader = DataLoader(
            dataset,
            batch_size=batch_size * self.local_devices,
            shuffle=train,
            generator=generator,
            collate_fn=collate_fn,
            num_workers=num_workers,
            drop_last=train,  # static shapes
        )
        return _DeviceLoader(loader, self)

    # -- state --------------------------------------------------------------------------------
    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        self.step_end()
        return {clean_name(k): self._host_copy(v) for k, v in self.unwrap(model).state_dict().items()}

    def optimizer_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        self.step_end()
        names = {id(p): clean_name(n) for n, p in model.named_parameters()}
        return named_optimizer_state(optimizer, names, self._host_copy)

    def load_optimizer_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        params = {clean_name(n): p for n, p in model.named_parameters()}
        load_named_optimizer_state(optimizer, params, state)
        _shard_optimizer_state(optimizer, self.mesh)

    def sharded_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The device tensors themselves (sharded ``XLA`` tensors), under the names and in the nesting that
        ``get_state_dict`` gives the other backends, so the checkpoints are interchangeable: the model's
        weights by Hugging Face name, the optimizer's ``{"state": {name: ...}, "param_groups": [...]}``.
        An optimizer without state yet gets it from a zero-gradient step at learning rate 0 (torch-xla's
        ``prime_optimizer``), which leaves the parameters as they are."""
        if not optimizer.state:
            from torch_xla.experimental.distributed_checkpoint import prime_optimizer

            rates = [group["lr"] for group in optimizer.param_groups]
            for group in optimizer.param_groups:
                group["lr"] = 0.0  # no weight decay either
            prime_optimizer(optimizer)
            for group, rate in zip(optimizer.param_groups, rates):
                group["lr"] = rate
        self.step_end()
        names = {id(p): clean_name(n) for n, p in model.named_parameters()}
        model_state = {clean_name(k): v for k, v in self.unwrap(model).state_dict(keep_vars=True).items()}
        return {"model": model_state, "optimizer": named_optimizer_state(optimizer, names, lambda t: t)}

    def save_sharded(
        self, folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, asynchronous: bool = False
    ) -> None:
        """As the base class, with torch-xla's SPMD planner (each host writes the shards of its devices).
        Always synchronous (``asynchronous`` is ignored): the device shards are copied to the host first."""
        import torch.distributed.checkpoint as dcp
        from torch_xla.experimental.distributed_checkpoint import SPMDSavePlanner

        state = self.sharded_state_dict(model, optimizer)
        with single_process_checkpoint():
            dcp.save(state, checkpoint_id=folder, planner=SPMDSavePlanner(), no_dist=not self._checkpoint_group())
        return None

    def load_sharded(self, folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Load into the device tensors in place with torch-xla's SPMD planner, which reads each device's
        shard from whichever files hold it (any earlier mesh or backend)."""
        import torch.distributed.checkpoint as dcp
        from torch_xla.experimental.distributed_checkpoint import SPMDLoadPlanner

        state = self.sharded_state_dict(model, optimizer)
        with single_process_checkpoint():
            dcp.load(state, checkpoint_id=folder, planner=SPMDLoadPlanner(), no_dist=not self._checkpoint_group())
        saved_groups = state["optimizer"]["param_groups"]  # read back as objects, in place of the live ones
        if len(saved_groups) != len(optimizer.param_groups):
            raise ValueError(f"checkpoint optimizer has {len(saved_groups)} parameter groups, the model's {len(optimizer.param_groups)}")
        for group, saved in zip(optimizer.param_groups, saved_groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.step_end()

    def _checkpoint_group(self) -> bool:
        """Hosts coordinate a DCP save or load over a gloo process group (started on first use, ``xla://``
        rendezvous); one host needs none. Returns whether there is one."""
        if self.num_processes == 1:
            return False
        import torch.distributed as dist

        if not dist.is_initialized():
            import torch_xla.distributed.xla_backend  # noqa: F401  (registers the xla:// init method)

            dist.init_process_group("gloo", init_method="xla://")
        return True

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Device copies (sharded like the parameters): no host transfer, no gather."""
        return {clean_name(n): p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def load_trainable_state(self, model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
        super().load_trainable_state(model, state)
        self.step_end()

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

    # -- what the backend did -----------------------------------------------------------------
    def compile_count(self) -> int:
        """Cumulative XLA graph compilations of this process."""
        import torch_xla.debug.metrics as met

        data = met.metric_data("CompileTime")
        return int(data[0]) if data else 0

    def sharding_summary(self, model: nn.Module) -> dict[str, str]:
        """Parameter name -> XLA's OpSharding text (``replicated`` for whole tensors)."""
        import torch_xla

        return {
            clean_name(n): (torch_xla._XLAC._get_xla_sharding_spec(p) or "replicated") for n, p in model.named_parameters()
        }

    def describe_sharding(self, summary: Mapping[str, str]) -> str:
        n_sharded = sum(spec != "replicated" for spec in summary.values())
        return (
            f"XLA SPMD mesh {tuple(self.mesh.mesh_shape)} {self.mesh.axis_names}: "
            f"{n_sharded}/{len(summary)} parameters sharded"
        )

    # -- processes (SPMD values are global; each host keeps its own objects) ----------------------
    def wait_for_everyone(self) -> None:
        if self.num_processes > 1:
            import torch_xla.core.xla_model as xm

            xm.rendezvous("genolm")


class _DeviceLoader:
    """A ``DataLoader`` whose batches arrive on the XLA device, sharded along the batch dimension."""

    def __init__(self, loader: Any, runtime: XLAFSDPRuntime) -> None:
        self.loader, self.runtime = loader, runtime

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.loader:
            yield self.runtime.to_device(batch)


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


def _materialise_sharded(model: nn.Module, mesh: Any, specs: Mapping[str, tuple]) -> None:
    """Give a meta-device ``model`` its parameters on the XLA device, each sharded (``specs``, else FSDPv2's
    spec) before it holds a value, then initialise them there with the model's ``_init_weights``, one
    transformer layer at a time (a graph each), so no full weight is ever on the host. XLA's random
    generator is seeded from ``torch.initial_seed()``."""
    import torch_xla
    import torch_xla.core.xla_model as xm
    import torch_xla.distributed.spmd as xs
    from torch_xla.experimental.spmd_fully_sharded_data_parallel import _prepare_spmd_partition_spec

    device = torch_xla.device()
    names = {id(p): n for n, p in model.named_parameters()}
    created: dict[int, nn.Parameter] = {}  # a tied parameter is created once
    for module in model.modules():
        for key, param in module._parameters.items():
            if param is None or not param.is_meta:
                continue
            if id(param) not in created:
                value = nn.Parameter(torch.empty(param.shape, dtype=param.dtype, device=device), param.requires_grad)
                spec = specs.get(names[id(param)]) or _prepare_spmd_partition_spec(value, shard_maximal=True)
                xs.mark_sharding(value, mesh, spec)
                created[id(param)] = value
            module._parameters[key] = created[id(param)]
        for key, buffer in module._buffers.items():
            if buffer is not None and buffer.is_meta:  # small tables (rotary frequencies): replicated
                module._buffers[key] = torch.empty(buffer.shape, dtype=buffer.dtype, device=device)

    xm.set_rng_state(torch.initial_seed() % 2**63, device)
    done: set[int] = set()
    with torch.no_grad():
        for unit in [*transformer_layers(model), model]:  # each layer, then the embeddings and heads
            for module in unit.modules():
                if id(module) not in done:
                    done.add(id(module))
                    model._init_weights(module)
            torch_xla.sync()


def _shard_model(model: nn.Module, mesh: Any, tensor_parallel: int = 1) -> nn.Module:
    import torch_xla
    import torch_xla.distributed.spmd as xs
    from torch_xla.distributed.fsdp import checkpoint_module
    from torch_xla.distributed.fsdp.wrap import transformer_auto_wrap_policy
    from torch_xla.experimental.spmd_fully_sharded_data_parallel import SpmdFullyShardedDataParallel as FSDPv2

    layer_names = set(getattr(model, "_no_split_modules", None) or [])
    layer_classes = {type(m) for m in model.modules() if type(m).__name__ in layer_names}
    if not layer_classes:
        raise ValueError(f"{type(model).__name__} declares no _no_split_modules layers to shard")
    specs = {}
    if tensor_parallel > 1:
        check_model(model.config, tensor_parallel)
        specs = {n: xla_partition_spec(n, p.dim()) for n, p in model.named_parameters()}
        specs = {n: spec for n, spec in specs.items() if spec is not None}
    if on_meta(model):
        _materialise_sharded(model, mesh, specs)
    elif specs:
        model.to(torch_xla.device())
        for name, param in model.named_parameters():
            if name in specs:
                xs.mark_sharding(param, mesh, specs[name])
    checkpointing = any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    if checkpointing:
        # transformers' checkpointing calls torch.utils.checkpoint, which XLA cannot use; torch-xla's
        # checkpoint_module wraps each layer instead.
        (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()

    def wrap_layer(module: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        if checkpointing:
            module = checkpoint_module(module)
        return FSDPv2(module, *args, **kwargs)

    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=layer_classes)
    return FSDPv2(
        model, mesh=mesh, shard_output=_shard_output, auto_wrap_policy=policy, auto_wrapper_callable=wrap_layer
    )


def _shard_optimizer_state(optimizer: torch.optim.Optimizer, mesh: Any) -> None:
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
