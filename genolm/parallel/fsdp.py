"""``fsdp``: PyTorch FSDP version 2 (``torch.distributed.fsdp.fully_shard``) over the processes that
``torchrun`` / ``accelerate launch`` started, on GPUs (NCCL) or CPUs (gloo).

Each ``_no_split_modules`` layer (``GenoLMLayer``) is one sharding unit, then the root module takes the rest
(embeddings, heads); parameters are ``DTensor`` s sharded along their first dimension over all processes and
re-sharded after the forward pass. bf16 runs compute in bf16 and reduce gradients in fp32
(``MixedPrecisionPolicy``). Accelerate still starts the process group and shards the data loaders, but the
model is sharded here (Accelerate uses FSDP on GPUs only).

With ``tensor_parallel`` N > 1 the processes form a 2-D ``DeviceMesh`` ``("dp", "tp")`` of shape
(processes / N, N): each layer is first split Megatron-style over ``"tp"`` (:mod:`genolm.parallel.tensor_parallel`),
then FSDP2 shards every parameter over ``"dp"``; the N processes of a ``"tp"`` group read the same batches. A
model built on the meta device is sharded there and materialised with ``to_empty`` (each process allocates its
shards only) before the model's own weight initialisation (:mod:`genolm.parallel.meta_init`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import _max_norm, compile_layers, transformer_layers
from .ddp import AcceleratorRuntime
from .meta_init import init_sharded_weights, on_meta
from .state import clean_name, rename_optimizer_state
from .tensor_parallel import apply_tensor_parallel, check_mesh, check_model


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a ``DTensor`` (a collective: every process calls it), else the tensor."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


class FSDP2Runtime(AcceleratorRuntime):
    backend = "fsdp"
    shards_parameters = True
    tensor_parallel = 1
    mesh: Any = None  # the 2-D ("dp", "tp") DeviceMesh under tensor parallelism, else None (FSDP2's default)

    @classmethod
    def start(
        cls,
        mixed_precision: str,
        log_with: list[str] | None = None,
        project_dir: str | None = None,
        tensor_parallel: int = 1,
    ) -> Any:
        if mixed_precision not in ("no", "bf16"):
            raise ConfigError(f"mixed_precision={mixed_precision!r} with parallel=fsdp; expected no or bf16")
        # Precision is FSDP2's MixedPrecisionPolicy, not Accelerate's autocast.
        runtime = super().start("no", log_with, project_dir)
        runtime.mixed_precision = mixed_precision
        check_mesh(tensor_parallel, cls.backend, runtime.num_processes)
        if tensor_parallel > 1:
            from torch.distributed.device_mesh import init_device_mesh

            runtime.tensor_parallel = tensor_parallel
            shape = (runtime.num_processes // tensor_parallel, tensor_parallel)
            runtime.mesh = init_device_mesh(runtime.device.type, shape, mesh_dim_names=("dp", "tp"))
        return runtime

    @property
    def data_parallel_index(self) -> int:
        return self.process_index if self.mesh is None else self.mesh["dp"].get_local_rank()

    @property
    def data_parallel_size(self) -> int:
        return self.num_processes // self.tensor_parallel

    def prepare(
        self,
        model: nn.Module,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        compile: bool = False,
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        layers = transformer_layers(model)
        meta = on_meta(model)  # a fresh model built on the meta device: materialised below, already sharded
        if not meta:
            model.to(self.device)
        if self.tensor_parallel > 1:
            check_model(model.config, self.tensor_parallel)
            apply_tensor_parallel(model, self.mesh["tp"])
        if compile:  # compile each layer first, then shard it: one FSDP2 unit per compiled layer
            compile_layers(model)
        policy = MixedPrecisionPolicy()
        if self.mixed_precision == "bf16":
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        dp_mesh = self.mesh["dp"] if self.mesh is not None else None
        for layer in layers:
            fully_shard(layer, mesh=dp_mesh, mp_policy=policy, reshard_after_forward=True)
        fully_shard(model, mesh=dp_mesh, mp_policy=policy, reshard_after_forward=True)
        if meta:
            model.to_empty(device=self.device)
            init_sharded_weights(model)
        return model, make_optimizer(model)

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model  # fully_shard shards in place (its parameters are DTensors)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def no_sync(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        if self.mesh is None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), _max_norm(max_norm))
            return _full(norm)
        # Under tensor parallelism parameters live on two meshes (the 2-D one, and "dp" for those FSDP2 alone
        # shards): one norm per mesh, then the total.
        by_mesh: dict[Any, list[torch.Tensor]] = {}
        for p in model.parameters():
            if p.grad is not None:
                by_mesh.setdefault(p.grad.device_mesh, []).append(p)
        norms = [_full(torch.nn.utils.get_total_norm([p.grad for p in group])) for group in by_mesh.values()]
        norm = torch.linalg.vector_norm(torch.stack(norms))
        for group in by_mesh.values():
            torch.nn.utils.clip_grads_with_norm_(group, _max_norm(max_norm), norm)
        return norm

    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(model, options=options)  # full on rank 0, empty elsewhere
        return {clean_name(k): v for k, v in state.items()}

    def optimizer_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_optimizer_state_dict(model, optimizer, options=options)
        return rename_optimizer_state(state, clean_name)

    def load_optimizer_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        # Every process passes the full state; torch.distributed.checkpoint keys parameters by their
        # canonical names (no wrapper prefixes) and keeps each process's shard.
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {
            clean_name(n): _full(p.detach()).to("cpu", copy=True)
            for n, p in model.named_parameters()
            if p.requires_grad
        }

    def load_trainable_state(self, model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
        from torch.distributed.tensor import DTensor, distribute_tensor

        with torch.no_grad():
            for name, param in model.named_parameters():
                value = state.get(clean_name(name))
                if value is None:
                    continue
                if isinstance(param, DTensor):  # every process holds the full value: keep its own shard
                    value = distribute_tensor(value.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
                param.copy_(value)

    def mesh_shape(self) -> list[int] | None:
        return super().mesh_shape() or [self.num_processes]  # fully_shard's default mesh: every process

    def sharding_summary(self, model: nn.Module) -> dict[str, str]:
        from torch.distributed.tensor import DTensor

        def mesh(p: DTensor) -> str:
            names = p.device_mesh.mesh_dim_names  # named under tensor parallelism: (dp=..., tp=...)
            if names:
                return "(" + ", ".join(f"{name}={size}" for name, size in zip(names, p.device_mesh.shape)) + ")"
            return str(tuple(p.device_mesh.shape))

        return {
            clean_name(n): (f"{p.placements} over mesh {mesh(p)}" if isinstance(p, DTensor) else "replicated")
            for n, p in model.named_parameters()
        }
