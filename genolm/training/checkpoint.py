"""Atomic training checkpoints.

Layout of ``OUTPUT_DIR/checkpoints/step-00001000/``::

    config.json, model.safetensors       the model in Hugging Face format (consolidated when sharded)
    tokenizer.json, tokenizer_config.json ...
    training_state.pt                    optimizer, scheduler, RNG and data-stream state, step, run config
    checkpoint.json                      manifest: step, size and sha256 of every file above (written last)

A checkpoint is written into a hidden temporary folder (``.tmp-step-...``), every file is fsync'ed, the
manifest is written last, and the folder is renamed into place (an atomic operation on POSIX filesystems),
so a run killed at any moment leaves either the previous checkpoints or the new one complete. Readers trust
only folders whose manifest matches the files on disk; anything else is skipped with a warning. Listing
compares sizes (cheap); :func:`latest_checkpoint`, which picks the checkpoint a run resumes from, also compares
every file's sha256, so a file altered in place (same size, other bytes) is caught too, and the run resumes from
the newest checkpoint that verifies (the same fallback as for an incomplete one). Weights holding NaN or
infinite values are refused at save time.

``AutoModelForMaskedLM.from_pretrained(checkpoint)`` (after ``import genolm``) loads the model directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputDataError
from .guards import check_finite_weights

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
MANIFEST_NAME = "checkpoint.json"
TRAINING_STATE_NAME = "training_state.pt"
MANIFEST_VERSION = 2  # 2: sha256 of every file (version 1 manifests carry sizes only)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    """The state of every random generator a training step may use (Python, numpy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    checkpoints_dir: str | Path,
    step: int,
    model: Any,
    tokenizer: Any,
    training_state: Mapping[str, Any],
    model_state_dict: Mapping[str, torch.Tensor] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and return its path.

    Args:
        checkpoints_dir: folder holding the ``step-*`` checkpoints (created if needed).
        step: optimizer steps done; names the folder.
        model: the (unwrapped) ``PreTrainedModel``; its config is saved with the weights.
        tokenizer: saved beside the model, so the folder is a complete Hugging Face checkpoint.
        training_state: anything ``torch.save`` can write (optimizer, scheduler, RNG, data state...).
        model_state_dict: full (consolidated) CPU weights when the live model is sharded; defaults to the
            model's own state dict.
        keep_last: keep only this many newest complete checkpoints (None keeps all).
    """
    state_dict = dict(model_state_dict) if model_state_dict is not None else model.state_dict()
    check_finite_weights(state_dict, f"checkpoint {checkpoint_name(step)}")
    checkpoints_dir = Path(checkpoints_dir)
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / checkpoint_name(step)
    tmp = checkpoints_dir / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()

    model.save_pretrained(tmp, state_dict=state_dict if model_state_dict is not None else None)
    tokenizer.save_pretrained(tmp)
    torch.save(dict(training_state), tmp / TRAINING_STATE_NAME)

    files, hashes = {}, {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        _fsync_file(path)
        name = str(path.relative_to(tmp))
        files[name] = path.stat().st_size
        hashes[name] = file_sha256(path)
    manifest = {"version": MANIFEST_VERSION, "step": step, "files": files, "sha256": hashes}
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    _fsync_file(tmp / MANIFEST_NAME)
    _fsync_dir(tmp)

    if final.exists():  # the same step saved again (e.g. the final save right after a resume)
        stale = checkpoints_dir / f".old-{final.name}-{os.getpid()}"
        os.replace(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(checkpoints_dir)
    if keep_last:
        prune_checkpoints(checkpoints_dir, keep_last)
    return final


def checkpoint_problem(path: str | Path, verify_hashes: bool = False) -> str | None:
    """Why ``path`` is not a complete checkpoint (None when it is): missing manifest, missing or
    truncated file; with ``verify_hashes`` also a file whose sha256 differs from the manifest's (altered in
    place). Manifests written before hashes were recorded are checked by size only."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        return f"no {MANIFEST_NAME} (the save did not finish)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        hashes = manifest.get("sha256", {})
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        return f"unreadable {MANIFEST_NAME}: {err}"
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            return f"missing {name}"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {size} (truncated or altered)"
    if verify_hashes:
        for name, expected in hashes.items():
            if file_sha256(path / name) != expected:
                return f"{name} does not match its sha256 in {MANIFEST_NAME} (corrupted or altered)"
    return None


def list_checkpoints(checkpoints_dir: str | Path, warn: bool = True) -> list[Path]:
    """Complete checkpoints under ``checkpoints_dir``, oldest first; incomplete ones are skipped with a
    warning."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for path in checkpoints_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if not match or not path.is_dir():
            continue
        problem = checkpoint_problem(path)
        if problem:
            if warn:
                warnings.warn(f"skipping incomplete checkpoint {path}: {problem}", stacklevel=2)
            continue
        found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(checkpoints_dir: str | Path, verify_hashes: bool = True) -> Path | None:
    """The newest complete checkpoint whose files match their sha256 (see :func:`checkpoint_problem`), or None.

    A checkpoint that fails the check is skipped with a warning naming the file, like an incomplete one, and
    the next older one is tried.
    """
    for path in reversed(list_checkpoints(checkpoints_dir)):
        problem = checkpoint_problem(path, verify_hashes=True) if verify_hashes else None
        if problem is None:
            return path
        warnings.warn(f"skipping corrupted checkpoint {path}: {problem}", stacklevel=2)
    return None


def prune_checkpoints(checkpoints_dir: str | Path, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest complete checkpoints, and leftovers of interrupted saves."""
    checkpoints_dir = Path(checkpoints_dir)
    complete = list_checkpoints(checkpoints_dir, warn=False)
    for path in complete[: max(0, len(complete) - keep_last)]:
        shutil.rmtree(path, ignore_errors=True)
    for path in checkpoints_dir.glob(".tmp-*"):
        if path.is_dir() and not path.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(path, ignore_errors=True)


def _numpy_globals() -> list[Any]:
    """What numpy arrays, scalars and dtypes (RNG states, data-stream buffers) need from the unpickler."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgSUO"}
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read ``training_state.pt`` of a checkpoint with ``weights_only`` loading (tensors, containers and the
    numpy arrays of the RNG and data-stream states; nothing that runs code)."""
    file = Path(path) / TRAINING_STATE_NAME
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        raise InputDataError(
            f"{file}: refused: it holds objects other than tensors, containers and numpy arrays"
            + (f" (a reference to {found.group(1)})" if found else "")
        ) from None


__all__ = [
    "MANIFEST_NAME",
    "TRAINING_STATE_NAME",
    "checkpoint_name",
    "checkpoint_problem",
    "file_sha256",
    "latest_checkpoint",
    "list_checkpoints",
    "load_training_state",
    "prune_checkpoints",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
