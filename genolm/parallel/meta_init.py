"""Models built on the meta device and materialised already sharded (torchtitan's way), so the full model never
exists on one host.

The recipe builds a fresh model under ``torch.device("meta")`` (shapes only; transformers skips the weight
initialisation there); the sharded runtimes allocate each device's part (FSDP2: ``to_empty`` after
``fully_shard``; XLA: each parameter created on the device with its sharding) and then run the model's own
``_init_weights`` on the sharded tensors, so the distributions (normal std, zeros, ones, the zeroed padding
row, the rotary table) are those of an eager build; the random values themselves differ.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def on_meta(model: nn.Module) -> bool:
    """Whether ``model`` holds parameters on the meta device (built without storage)."""
    return any(p.is_meta for p in model.parameters())


def _module_seed(seed: int, index: int, module: nn.Module) -> int:
    """A seed for module ``index`` of this process: equal on the processes that hold the same part of the
    module's parameters (replicas), different where they hold different shards."""
    from torch.distributed.tensor import DTensor

    coordinate: tuple[int, ...] = ()
    for param in module.parameters(recurse=False):
        if isinstance(param, DTensor):
            mesh_coordinate = param.device_mesh.get_coordinate() or []
            coordinate = tuple(c if p.is_shard() else -1 for c, p in zip(mesh_coordinate, param.placements))
            break
    digest = hashlib.sha256(repr((seed, index, coordinate)).encode()).digest()
    return int.from_bytes(digest[:7], "little")


def _zero_padding_row(module: nn.Embedding) -> None:
    """Zero the padding row of a (possibly sharded) embedding table: the row of the shard that holds it."""
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    weight = module.weight
    if not isinstance(weight, DTensor):
        weight.data[module.padding_idx] = 0
        return
    local_shape, offset = compute_local_shape_and_global_offset(weight.shape, weight.device_mesh, weight.placements)
    row = module.padding_idx - offset[0]
    if 0 <= row < local_shape[0]:
        local = weight.to_local()
        local[row] = 0


@torch.no_grad()
def init_sharded_weights(model: nn.Module, seed: int | None = None) -> None:
    """Initialise every module of a materialised (``to_empty``), possibly ``DTensor``-sharded ``model`` with
    the model's ``_init_weights``, module by module. ``seed`` (default ``torch.initial_seed()``) makes it
    reproducible; each module gets its own seed, the same on replicas and distinct across shards, since
    DTensor's random operators follow the sharding only on GPUs."""
    seed = torch.initial_seed() if seed is None else seed
    for index, module in enumerate(model.modules()):
        torch.manual_seed(_module_seed(seed, index, module))
        padding_idx = getattr(module, "padding_idx", None) if isinstance(module, nn.Embedding) else None
        if padding_idx is not None:  # indexing a sharded table cannot write in place: done below
            module.padding_idx = None
        try:
            model._init_weights(module)
        finally:
            if padding_idx is not None:
                module.padding_idx = padding_idx
        if padding_idx is not None:
            _zero_padding_row(module)
    torch.manual_seed(seed)
