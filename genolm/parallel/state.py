"""Portable training state: parameter names without wrapper pieces, and optimizer states keyed by those names
(full, on the CPU), so a checkpoint written under one backend resumes under any other."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

# Name pieces that wrappers add to parameter names; removed to get the Hugging Face model's names.
_WRAPPER_PARTS = ("_orig_module", "_checkpoint_wrapped_module", "_fsdp_wrapped_module")


def clean_name(name: str) -> str:
    """Parameter name without the pieces that DDP / FSDP / checkpoint wrappers insert."""
    if name.startswith("module."):  # DDP
        name = name[len("module.") :]
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_PARTS)


def named_optimizer_state(
    optimizer: torch.optim.Optimizer,
    names: Mapping[int, str],
    to_cpu: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """``optimizer.state_dict()`` with parameter names (``names``: ``id(param)`` -> name) instead of indices,
    tensors on the CPU."""
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


def load_named_optimizer_state(
    optimizer: torch.optim.Optimizer, params: Mapping[str, torch.Tensor], named: Mapping[str, Any]
) -> None:
    """Inverse of :func:`named_optimizer_state` (``params``: name -> parameter of the optimizer)."""
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


def rename_optimizer_state(state: dict[str, Any], rename: Callable[[str], str]) -> dict[str, Any]:
    """A name-keyed optimizer state with every parameter name passed through ``rename``."""
    if not state:  # a full FSDP state dict offloaded to the CPU exists on rank 0 only
        return state
    return {
        "state": {rename(k): v for k, v in state["state"].items()},
        "param_groups": [{**g, "params": [rename(n) for n in g["params"]]} for g in state["param_groups"]],
    }


@contextlib.contextmanager
def single_process_checkpoint() -> Iterator[None]:
    """Silence DCP's warning that it runs in one process without a process group (intended here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def load_full_model_state(folder: str | os.PathLike, state: dict[str, torch.Tensor]) -> None:
    """Fill ``state`` (a model's ``state_dict()``: full CPU tensors, Hugging Face names) in place with the
    ``"model"`` part of the DCP checkpoint in ``folder``, whatever backend and number of processes wrote it.
    Runs in this process alone (no process group), reading only the model's entries, not the optimizer's."""
    import torch.distributed.checkpoint as dcp

    with single_process_checkpoint():
        dcp.load({"model": state}, checkpoint_id=folder, no_dist=True)


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Trackers take scalar hyper-parameters: flatten dicts, stringify lists and None."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flat_config(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat
