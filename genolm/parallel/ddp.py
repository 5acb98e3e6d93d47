"""Runtimes on Accelerate: one process (CPU or one GPU), and data parallelism (DDP) over the processes that
``accelerate launch`` / ``torchrun`` started (gloo on CPUs, NCCL on GPUs)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .base import Runtime, _max_norm, compile_layers
from .state import clean_name


def start_accelerator(mixed_precision: str, log_with: list[str] | None, project_dir: str | None) -> Any:
    """An ``Accelerator`` on the GPU of this process, or on the CPU without one (it then sets up a gloo
    process group when several processes were started)."""
    from accelerate import Accelerator

    return Accelerator(
        mixed_precision=mixed_precision, log_with=log_with, project_dir=project_dir, cpu=not torch.cuda.is_available()
    )


def accelerator_device_kind(device: torch.device) -> str | None:
    if device.type == "cuda":
        from ..training.flops import gpu_kind

        return gpu_kind(torch.cuda.get_device_name(device))
    return "cpu"


class AcceleratorRuntime(Runtime):
    """Device placement, process group, data loaders and collectives through an Accelerate ``Accelerator``."""

    @classmethod
    def start(cls, mixed_precision: str, log_with: list[str] | None = None, project_dir: str | None = None) -> Runtime:
        accelerator = start_accelerator(mixed_precision, log_with, project_dir)
        return cls(
            device=accelerator.device,
            mixed_precision=mixed_precision,
            process_index=accelerator.process_index,
            num_processes=accelerator.num_processes,
            num_devices=accelerator.num_processes,
            device_kind=accelerator_device_kind(accelerator.device),
            accelerator=accelerator,
        )

    def prepare(
        self,
        model: nn.Module,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        compile: bool = False,
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        if compile:
            compile_layers(model)
        model.to(self.device)  # before the optimizer, which picks its kernels by the parameters' device
        optimizer = make_optimizer(model)
        return self.accelerator.prepare(model, optimizer)

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        return self.accelerator.clip_grad_norm_(model.parameters(), _max_norm(max_norm))

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
    ) -> Any:
        from torch.utils.data import DataLoader

        drop_last = train and self.static_shapes
        if lengths is not None and not self.static_shapes:
            from ..batching import LengthBucketBatchSampler

            sampler = LengthBucketBatchSampler(
                lengths,
                batch_size,
                shuffle=train,
                generator=generator,
                drop_last=drop_last,
                num_replicas=self.num_processes,  # Accelerate deals batch i to process i % num_processes
            )
            loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers)
        else:
            loader = DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=train,
                generator=generator,
                collate_fn=collate_fn,
                num_workers=num_workers,
                drop_last=drop_last,
            )
        return self.accelerator.prepare(loader)

    def gather_for_metrics(self, *tensors: torch.Tensor, pad_dim: int | None = None) -> tuple[torch.Tensor, ...]:
        if self.num_processes == 1:
            return tensors
        if pad_dim is not None:
            tensors = tuple(
                self.accelerator.pad_across_processes(t, dim=pad_dim) if t.dim() > pad_dim else t for t in tensors
            )
        return tuple(self.accelerator.gather_for_metrics(tensors))

    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        state = self.accelerator.get_state_dict(model)  # the main process gets the full weights
        return {clean_name(k): v for k, v in (state or {}).items()}

    def wait_for_everyone(self) -> None:
        self.accelerator.wait_for_everyone()

    def main_process_first(self) -> contextlib.AbstractContextManager:
        return self.accelerator.main_process_first()

    def gather_object(self, obj: Any) -> list[Any]:
        if self.num_processes == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        return value if self.num_processes == 1 else self.accelerator.reduce(value, reduction="mean")

    def reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        return value if self.num_processes == 1 else self.accelerator.reduce(value, reduction="sum")


class SingleProcessRuntime(AcceleratorRuntime):
    """``none``: one process on one device (the CPU, or one GPU)."""

    backend = "none"


class DDPRuntime(AcceleratorRuntime):
    """``ddp``: every process holds the whole model; gradients are averaged after each backward pass."""

    backend = "ddp"

    def no_sync(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        if sync:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(model)
