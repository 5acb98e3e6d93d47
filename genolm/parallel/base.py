"""The interface of a runtime: everything the training recipes do that depends on where and how they run.

Each backend is one subclass (``genolm/parallel/ddp.py``, ``fsdp.py``, ``xla.py``). What differs between
backends is a method or a class attribute here, so a recipe never asks which backend it runs on.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, ClassVar

import torch
from torch import nn

from .state import (
    clean_name,
    flat_config,
    load_named_optimizer_state,
    named_optimizer_state,
    single_process_checkpoint,
)


class Runtime:
    """Where and how the training step runs. Create with :func:`genolm.parallel.setup`.

    Class attributes (what a recipe adapts to):
        backend: the ``--parallel`` name.
        static_shapes: batches must keep one shape (XLA compiles one graph per shape): pad to a fixed
            length and drop the last incomplete training batch.
        sparse_lm_head: the masked-LM head may project only the masked positions (a data-dependent shape).
        shards_parameters: parameters are split over devices (FSDP2, SPMD FSDPv2).
        async_checkpoints: :meth:`save_sharded` can write in the background (``asynchronous=True``).

    Attributes:
        device: where batches go.
        mixed_precision: ``"no"``, ``"bf16"`` (or ``"fp16"`` for the Accelerate backends).
        process_index, num_processes: this process among the job's processes (hosts under XLA SPMD).
        num_devices: accelerators computing the global batch (for tokens/s per device and MFU).
        local_devices: devices this process feeds; its host batch is ``batch_size * local_devices`` (more
            than 1 only under XLA SPMD, where one process drives every device of its host).
        device_kind: key of ``genolm.training.flops.PEAK_FLOPS``, ``"cpu"``, or None when unknown.
        accelerator: an Accelerate ``Accelerator`` (process group, data loaders, trackers) or None.
    """

    backend: ClassVar[str] = ""
    static_shapes: ClassVar[bool] = False
    sparse_lm_head: ClassVar[bool] = True
    shards_parameters: ClassVar[bool] = False
    async_checkpoints: ClassVar[bool] = True

    def __init__(
        self,
        device: torch.device,
        mixed_precision: str,
        *,
        process_index: int = 0,
        num_processes: int = 1,
        num_devices: int = 1,
        local_devices: int = 1,
        device_kind: str | None = None,
        accelerator: Any = None,
    ) -> None:
        self.device = device
        self.mixed_precision = mixed_precision
        self.process_index = process_index
        self.num_processes = num_processes
        self.num_devices = num_devices
        self.local_devices = local_devices
        self.device_kind = device_kind
        self.accelerator = accelerator
        self._trackers_on = False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(device={self.device}, mixed_precision={self.mixed_precision!r}, "
            f"process {self.process_index}/{self.num_processes}, {self.num_devices} device(s))"
        )

    @property
    def gradient_replicas(self) -> int:
        """Processes whose gradients the backend averages after ``backward`` (DDP, FSDP2: every process; one
        process, or an XLA SPMD step, which is a single global computation: 1). A loss normalised by the step's
        global token count is multiplied by this, so that the averaged gradient is the global token mean's."""
        return self.num_processes

    @property
    def data_parallel_index(self) -> int:
        """This process's share of the data: its index among the processes that read different batches (under
        tensor parallelism the processes of one model-parallel group read the same ones)."""
        return self.process_index

    @property
    def data_parallel_size(self) -> int:
        """How many processes read different batches (see :attr:`data_parallel_index`)."""
        return self.num_processes

    @property
    def sharded_checkpoints_unsupported(self) -> str | None:
        """Why this runtime cannot write sharded (DCP) checkpoints in its present layout; None when it can."""
        return None

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on the main process only."""
        if self.is_main_process:
            print(*args, **kwargs)

    # -- model and optimizer ------------------------------------------------------------------
    def prepare(
        self,
        model: nn.Module,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        compile: bool = False,
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Wrap/shard ``model`` for the backend and build its optimizer with ``make_optimizer(model)``.

        ``compile``: ``torch.compile`` each transformer layer (:func:`compile_layers`) before any wrapping,
        so FSDP2 units stay whole (torchtitan's order); backends that compile a graph anyway ignore it.
        Backends that shard parameters also take a model built on the meta device and materialise it in its
        shards, initialised by the model's ``_init_weights`` (:mod:`genolm.parallel.meta_init`)."""
        raise NotImplementedError

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The Hugging Face model inside the wrappers."""
        return model

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for the forward pass (for backends whose wrapped model does not cast)."""
        return contextlib.nullcontext()

    def no_sync(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Context of one micro-batch: ``sync=False`` skips the gradient reduction (not the last micro-batch
        of an accumulation)."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        """Clip to ``max_norm`` (0: no clipping) and return the total gradient norm (a device tensor)."""
        return torch.nn.utils.clip_grad_norm_(model.parameters(), _max_norm(max_norm))

    def step_end(self) -> None:
        """End of an optimizer step (under XLA the step's lazy graph is cut and run here)."""

    # -- data ---------------------------------------------------------------------------------
    def device_batches(self, batches: Iterable[Mapping[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
        """Move a stream of host batches to the device. A backend whose loader reads ahead on a thread gives a
        stream that has ``iter_with_state`` / ``set_consumed`` (a ``BatchStream``) the state of each batch as it
        hands that batch on (:class:`PrefetchedStates`), so the stream's ``state_dict()`` stays the position
        after the last batch consumed; this one reads nothing ahead."""
        for batch in batches:
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def to_device(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One host batch to the device."""
        return {k: v.to(self.device) for k, v in batch.items()}

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
        """Batches of ``batch_size`` items per device, on the device; every process of the job gets its own
        part of ``dataset``. ``train``: shuffled with ``generator`` at every pass, and under
        ``static_shapes`` without the last incomplete batch; else every item once, in order. Iterating
        again starts a new pass; ``len`` is batches per pass. ``lengths`` (each item's length): batches of
        similar lengths (:mod:`genolm.batching`), so less padding; backends with ``static_shapes`` ignore it."""
        raise NotImplementedError

    def gather_for_metrics(self, *tensors: torch.Tensor, pad_dim: int | None = None) -> tuple[torch.Tensor, ...]:
        """The evaluation outputs of every process, concatenated along the batch dimension, without the items
        that were repeated to even out the last batch. ``pad_dim``: first pad along that dimension (of the
        tensors that have it) to the longest over processes."""
        return tensors

    # -- state --------------------------------------------------------------------------------
    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Full (consolidated) CPU weights under the Hugging Face model's parameter names; every process
        takes part, the main process gets them (others may get an empty dict)."""
        return {clean_name(k): v.detach().cpu() for k, v in self.unwrap(model).state_dict().items()}

    def optimizer_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Optimizer state keyed by parameter name, full and on the CPU (portable across backends)."""
        names = {id(p): clean_name(n) for n, p in model.named_parameters()}
        return named_optimizer_state(optimizer, names)

    def load_optimizer_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Inverse of :meth:`optimizer_state_dict`."""
        params = {clean_name(n): p for n, p in model.named_parameters()}
        load_named_optimizer_state(optimizer, params, state)

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A copy of the trainable parameters (to restore the best ones later with
        :meth:`load_trainable_state`); every process takes part."""
        return {
            clean_name(n): p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad
        }

    def load_trainable_state(self, model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
        """Copy a :meth:`trainable_state` back into the model's parameters."""
        with torch.no_grad():
            for name, param in model.named_parameters():
                if clean_name(name) in state:
                    param.copy_(state[clean_name(name)])

    # -- sharded checkpoints (torch.distributed.checkpoint) ----------------------------------------
    def sharded_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """``{"model": ..., "optimizer": ...}``: this process's part of the training state, for DCP.

        Keys are the Hugging Face model's parameter names (``get_state_dict`` removes DDP / FSDP / compile
        wrapper names), values plain tensors or FSDP2 ``DTensor`` shards, so a checkpoint written under one
        backend loads under another. An optimizer without state yet (before its first step) gets it first."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(model, optimizer)
        return {"model": model_state, "optimizer": optimizer_state}

    def save_sharded(
        self, folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, asynchronous: bool = False
    ) -> Future | None:
        """Write :meth:`sharded_state_dict` with ``torch.distributed.checkpoint`` into ``folder``: every
        process writes the shards it holds (one ``.distcp`` file per process) and the coordinator the
        ``.metadata``; every process calls it. ``asynchronous``: stage the state to CPU memory, write in a
        background thread and return its future (``None``: written before returning)."""
        import torch.distributed.checkpoint as dcp

        state = self.sharded_state_dict(model, optimizer)
        no_dist = not _distributed()
        if asynchronous:
            if no_dist:  # process-wide: the background thread warns after this returns
                warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable")
            return dcp.async_save(state, checkpoint_id=folder, process_group=_cpu_group(), no_dist=no_dist)
        with single_process_checkpoint():
            dcp.save(state, checkpoint_id=folder, no_dist=no_dist)
        return None

    def load_sharded(self, folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Load what :meth:`save_sharded` wrote (by any backend, on any number of processes: DCP reads each
        process's part of every tensor from whichever files hold it) into the prepared model and optimizer."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        state = self.sharded_state_dict(model, optimizer)
        with single_process_checkpoint():
            dcp.load(state, checkpoint_id=folder, no_dist=not _distributed())
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])

    def mesh_shape(self) -> list[int] | None:
        """Shape of the device mesh parameters are laid out on (None without one)."""
        mesh = getattr(self, "mesh", None)
        shape = getattr(mesh, "mesh_shape", None) or getattr(mesh, "shape", None)
        return [int(n) for n in shape] if shape is not None else None

    # -- what the backend did -----------------------------------------------------------------
    def compile_count(self) -> int | None:
        """Cumulative graph compilations of this process (None where nothing is compiled per shape)."""
        return None

    def sharding_summary(self, model: nn.Module) -> dict[str, str]:
        """Parameter name -> how it is split over devices (empty when nothing is sharded)."""
        return {}

    def describe_sharding(self, summary: Mapping[str, str]) -> str:
        """One line about a :meth:`sharding_summary`."""
        n_sharded = sum(spec != "replicated" for spec in summary.values())
        return f"{self.backend}: {n_sharded}/{len(summary)} parameters sharded over {self.num_devices} devices"

    # -- processes ----------------------------------------------------------------------------
    def wait_for_everyone(self) -> None:
        """Barrier over the job's processes."""

    def main_process_first(self) -> contextlib.AbstractContextManager:
        """Context run by the main process first, then by the others (one download or conversion)."""
        return contextlib.nullcontext()

    def gather_object(self, obj: Any) -> list[Any]:
        """``obj`` of every process, in process order."""
        return [obj]

    def reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a per-process tensor over processes."""
        return value

    def reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum of a per-process tensor over processes."""
        return value

    # -- trackers -----------------------------------------------------------------------------
    def init_trackers(self, project: str, config: Mapping[str, Any]) -> None:
        if self.accelerator is not None and self.accelerator.log_with and self.is_main_process:
            self.accelerator.init_trackers(project, config=flat_config(config))
            self._trackers_on = True

    def log(self, values: Mapping[str, Any], step: int) -> None:
        if self._trackers_on:
            self.accelerator.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    def end(self) -> None:
        if self._trackers_on:
            self.accelerator.end_training()


class PrefetchedStates:
    """The states of a stream's batches while a loader reads ahead: :meth:`host_batches` (iterated by the
    loader's thread) queues the state of each batch it gives the loader, and :meth:`consumed` (called as the
    loader hands a batch on, in the same order: one device, one queue) passes the oldest to the stream's
    ``set_consumed``."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.pending: collections.deque = collections.deque()  # append and popleft are thread-safe

    def host_batches(self) -> Iterator[Mapping[str, torch.Tensor]]:
        for batch, state in self.stream.iter_with_state():
            self.pending.append(state)
            yield batch

    def consumed(self) -> None:
        self.stream.set_consumed(self.pending.popleft())


def transformer_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated layers of ``model``: modules whose class is in the Hugging Face model's
    ``_no_split_modules`` (``GenoLMLayer``), also inside a PEFT wrapper. Raises ``ValueError`` without any."""
    get_base = getattr(model, "get_base_model", None)
    hf_model = get_base() if callable(get_base) else model  # PEFT does not forward _no_split_modules
    layer_names = set(getattr(hf_model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_names]
    if not layers:
        raise ValueError(f"{type(model).__name__} declares no _no_split_modules layers")
    return layers


def compile_layers(model: nn.Module) -> int:
    """``torch.compile`` every transformer layer of ``model`` in place (``nn.Module.compile``, so parameter
    names and state dicts are unchanged), each as one full graph; returns how many. Per-layer compilation
    is torchtitan's: one compiled code object serves every layer, compilation stays short, and the layers
    remain the units FSDP2 shards and gradient checkpointing recomputes. The parts around the layers
    (embeddings, heads, the sparse LM head's data-dependent selection) stay eager."""
    layers = transformer_layers(model)
    for layer in layers:
        layer.compile(fullgraph=True)
    return len(layers)


def _max_norm(max_norm: float) -> float:
    return max_norm if max_norm and max_norm > 0 else math.inf


def _distributed() -> bool:
    """A ``torch.distributed`` process group is running (several processes)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


_CPU_GROUP: list[Any] = []


def _cpu_group() -> Any:
    """A gloo process group over every process, for the CPU collectives of an asynchronous DCP save; None
    (DCP's default group) when the default group is gloo already or there is no process group."""
    if not _distributed():
        return None
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return None
    if not _CPU_GROUP:
        _CPU_GROUP.append(dist.new_group(backend="gloo"))
    return _CPU_GROUP[0]
