"""Atomic training checkpoints, consolidated (one process writes everything) or sharded (every process
writes its part with ``torch.distributed.checkpoint``, DCP).

Layout of a consolidated checkpoint, ``OUTPUT_DIR/checkpoints/step-00001000/``::

    config.json, model.safetensors       the model in Hugging Face format
    tokenizer.json, tokenizer_config.json ...
    training_state.pt                    optimizer, scheduler, RNG and data-stream state, step, run config
    checkpoint.json                      manifest: step, size and sha256 of every file above (written last)

Layout of a sharded checkpoint (:func:`save_sharded_checkpoint`), which no process gathers::

    config.json, tokenizer files         enough to rebuild the model and export it without the recipe
    dcp/                                 DCP: "model" and "optimizer" state, a .distcp file per process + .metadata
    process-00000.pt, ...                one small file per process: the state the recipe passes for it
                                         (data-stream position, RNG states)
    trainer_state.json                   step, tokens seen, scheduler state, run config, backend, processes,
                                         devices and mesh shape of the run that wrote it
    model.safetensors                    the end-of-run checkpoint only: the consolidated weights
    checkpoint.json                      manifest, written last by the main process

DCP keys tensors by the Hugging Face model's parameter names and records which slice of each tensor every
file holds, so a sharded checkpoint resumes on another number of processes, another mesh or another backend
(:func:`load_checkpoint`), and :func:`export_checkpoint` (``genolm export``) consolidates it on the CPU in one
process. Every process writes into one temporary folder: a filesystem shared by every host is assumed (as
torchtitan does).

A checkpoint is written into a hidden temporary folder (``.tmp-step-...``), every file is fsync'ed, the
manifest is written last, and the folder is renamed into place (an atomic operation on POSIX filesystems),
so a run killed at any moment leaves either the previous checkpoints or the new one complete. Readers trust
only folders whose manifest matches the files on disk; anything else is skipped with a warning. Listing
compares sizes (cheap); :func:`latest_checkpoint`, which picks the checkpoint a run resumes from, also compares
every file's sha256, so a file altered in place (same size, other bytes) is caught too, and the run resumes from
the newest checkpoint that verifies (the same fallback as for an incomplete one). Weights holding NaN or
infinite values are refused at save time.

``AutoModelForMaskedLM.from_pretrained(checkpoint)`` (after ``import genolm``) loads the model of a consolidated
checkpoint, or of a sharded one that holds ``model.safetensors``.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, InputDataError
from .guards import check_finite_weights

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
MANIFEST_NAME = "checkpoint.json"
TRAINING_STATE_NAME = "training_state.pt"
TRAINER_STATE_NAME = "trainer_state.json"
DCP_DIR = "dcp"
WEIGHTS_NAME = "model.safetensors"
FORMATS = ("auto", "sharded", "consolidated")
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

    _seal(tmp, final, step, keep_last)
    return final


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _seal(tmp: Path, final: Path, step: int, keep_last: int | None, hashes: Mapping[str, str] | None = None) -> None:
    """Write the manifest of the complete folder ``tmp`` (sha256 of every file; ``hashes``: those already
    computed), then rename it to ``final`` (replacing a checkpoint of the same step) and prune."""
    files, sha256 = {}, {}
    for name in _files(tmp):
        path = tmp / name
        _fsync_file(path)
        files[name] = path.stat().st_size
        sha256[name] = (hashes or {}).get(name) or file_sha256(path)
    for folder in sorted({p for p in tmp.rglob("*") if p.is_dir()}):
        _fsync_dir(folder)
    manifest = {"version": MANIFEST_VERSION, "step": step, "files": files, "sha256": sha256}
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    _fsync_file(tmp / MANIFEST_NAME)
    _fsync_dir(tmp)

    checkpoints_dir = final.parent
    if final.exists():  # the same step saved again (e.g. the final save right after a resume)
        stale = checkpoints_dir / f".old-{final.name}-{os.getpid()}"
        os.replace(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(checkpoints_dir)
    if keep_last:
        prune_checkpoints(checkpoints_dir, keep_last)


def checkpoint_format(
    requested: str, shards_parameters: bool, num_processes: int, unsupported: str | None = None
) -> str:
    """``sharded`` or ``consolidated``: ``requested`` unless ``auto``, which is sharded when the parameters
    are sharded or more than one process trains, consolidated otherwise (one process, whole model).

    ``unsupported``: why the runtime cannot write sharded checkpoints in its present layout (None: it can);
    ``auto`` then gives consolidated, and ``sharded`` is refused with that reason."""
    if requested not in FORMATS:
        raise ConfigError(f"checkpoint_format={requested!r}; expected one of {', '.join(FORMATS)}")
    if requested == "sharded" and unsupported:
        raise ConfigError(f"checkpoint_format=sharded: {unsupported}; use checkpoint_format=consolidated (or auto)")
    if requested != "auto":
        return requested
    if unsupported:
        return "consolidated"
    return "sharded" if shards_parameters or num_processes > 1 else "consolidated"


def is_sharded_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds a DCP (sharded) training state."""
    return (Path(path) / DCP_DIR).is_dir()


def process_state_name(index: int) -> str:
    return f"process-{index:05d}.pt"


class ShardedSave:
    """A sharded checkpoint being written (see :func:`save_sharded_checkpoint`); :meth:`finish` completes it."""

    def __init__(
        self, rt: Any, tmp: Path, final: Path, step: int, pending: Any, keep_last: int | None, consolidate: bool
    ) -> None:
        self.rt, self.tmp, self.final, self.step = rt, tmp, final, step
        self.pending, self.keep_last, self.consolidate = pending, keep_last, consolidate

    def finish(self) -> Path:
        """Wait for the DCP write (asynchronous saves), add the consolidated weights when asked, write the
        manifest and rename the folder into place; returns the checkpoint's path. Every process calls it:
        each hashes a share of the files, the main process writes the manifest and renames."""
        rt = self.rt
        if self.pending is not None:
            completion = getattr(self.pending, "upload_completion", self.pending)  # AsyncSaveResponse or Future
            completion.result()
            self.pending = None
        rt.wait_for_everyone()
        if self.consolidate and rt.is_main_process:
            model = consolidated_model(self.tmp)
            model.save_pretrained(self.tmp)  # model.safetensors (and the same config.json again)
        rt.wait_for_everyone()
        names = _files(self.tmp)
        mine = {name: file_sha256(self.tmp / name) for name in names[rt.process_index :: rt.num_processes]}
        hashes: dict[str, str] = {}
        for part in rt.gather_object(mine):  # one host under XLA SPMD: only its own; the rest are hashed below
            hashes.update(part)
        if rt.is_main_process:
            _seal(self.tmp, self.final, self.step, self.keep_last, hashes)
        rt.wait_for_everyone()
        return self.final


def save_sharded_checkpoint(
    checkpoints_dir: str | Path,
    step: int,
    rt: Any,
    model: Any,
    optimizer: Any,
    *,
    tokenizer: Any,
    trainer_state: Mapping[str, Any],
    process_state: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    keep_last: int | None = None,
    asynchronous: bool = False,
    consolidate: bool = False,
) -> ShardedSave:
    """Start writing sharded checkpoint ``step``; every process calls it and then ``.finish()`` on the result.

    Args:
        checkpoints_dir: folder holding the ``step-*`` checkpoints (on a filesystem every host shares).
        rt: the run's :class:`genolm.parallel.Runtime`; its ``save_sharded`` writes the model and optimizer.
        model, optimizer: as prepared by ``rt.prepare``.
        tokenizer: saved beside ``config.json`` (the main process writes both).
        trainer_state: JSON-serialisable run state (step, tokens seen, scheduler...); the main process writes
            it to ``trainer_state.json`` with the backend, process and device counts and the mesh shape added.
        process_state: this process's own state (``torch.save``-able with ``weights_only`` loading: tensors,
            containers, numpy arrays), written to ``process-NNNNN.pt``; or a function returning it, called
            once the shards are written (under XLA the write runs the device's pending graph, which moves its
            random generator: the state saved must be the one training continues from).
        keep_last: keep only this many newest complete checkpoints.
        asynchronous: DCP ``async_save`` where the runtime offers it: training continues while the shards
            are written; ``finish`` (call it before the next save and at the end of the run) waits for them.
        consolidate: also write the consolidated ``model.safetensors`` (the end-of-run checkpoint), so
            ``from_pretrained`` loads the folder.

    The model and optimizer state never leave their processes: each writes its own shards into
    ``dcp/``. Nothing is visible under ``step-*`` before ``finish`` renames the complete folder.
    """
    checkpoints_dir = Path(checkpoints_dir)
    name = checkpoint_name(step)
    tmp = checkpoints_dir / f".tmp-{name}-sharded"  # one name every process knows (the leftover of a killed
    # save is removed here or by the next pruning)
    if rt.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / DCP_DIR).mkdir(parents=True)
    rt.wait_for_everyone()
    pending = rt.save_sharded(tmp / DCP_DIR, model, optimizer, asynchronous=asynchronous)
    if callable(process_state):
        process_state = process_state()
    torch.save(dict(process_state), tmp / process_state_name(rt.process_index))
    if rt.is_main_process:
        rt.unwrap(model).config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        layout = {
            "backend": rt.backend,
            "num_processes": rt.num_processes,
            "num_devices": rt.num_devices,
            "mesh_shape": rt.mesh_shape(),
        }
        (tmp / TRAINER_STATE_NAME).write_text(json.dumps({**trainer_state, **layout}, indent=1))
    return ShardedSave(rt, tmp, checkpoints_dir / name, step, pending, keep_last, consolidate)


@dataclass
class ResumedState:
    """What :func:`load_checkpoint` hands back to the recipe.

    Attributes:
        trainer: step, tokens_seen, scheduler, val_before, config, backend... of the run that saved it.
        process: the state this process continues from (data stream, RNG): its own, or, when the checkpoint
            was written by another number of processes, the one :func:`genolm.training.resume.resume_plan`
            assigns it.
        sharded: the checkpoint was sharded (DCP).
        note: None when the continuation is exact; else the one-line warning saying what is done instead.
    """

    trainer: dict[str, Any]
    process: dict[str, Any]
    sharded: bool
    note: str | None = None


def load_checkpoint(path: str | Path, rt: Any, model: Any, optimizer: Any) -> ResumedState:
    """Load checkpoint ``path`` into the prepared ``model`` and ``optimizer`` (every process calls it) and
    return the rest of the state.

    Sharded: DCP loads every process's part of the model and optimizer state, whatever the number of
    processes, mesh or backend that wrote it. Consolidated: the model was already built from the folder's
    weights (``from_pretrained``); the full optimizer state goes back into the (possibly sharded) optimizer.
    """
    from .resume import resume_plan

    path = Path(path)
    if is_sharded_checkpoint(path):
        rt.load_sharded(path / DCP_DIR, model, optimizer)
        trainer = json.loads((path / TRAINER_STATE_NAME).read_text())
        index, note = resume_plan(int(trainer["num_processes"]), rt.process_index, rt.num_processes)
        process = _load_weights_only(path / process_state_name(index))
        return ResumedState(trainer, process, sharded=True, note=note)
    state = load_training_state(path)
    rt.load_optimizer_state_dict(model, optimizer, state["optimizer"])
    trainer = {k: v for k, v in state.items() if k not in ("optimizer", "processes", "streams", "rng")}
    # written before per-process states: the streams of every process and the main process's RNG
    processes = state.get("processes") or [{"stream": s, "rng": state["rng"]} for s in state["streams"]]
    index, note = resume_plan(len(processes), rt.process_index, rt.num_processes)
    return ResumedState(trainer, processes[index], sharded=False, note=note)


def model_class(config: Any) -> Any:
    """The genolm model class a checkpoint's config names (``architectures``), masked LM by default."""
    import genolm

    names = getattr(config, "architectures", None) or ["GenoLMForMaskedLM"]
    found = getattr(genolm, names[0], None)
    if found is None:
        raise InputDataError(f"config.json names the architecture {names[0]!r}, which genolm does not provide")
    return found


def consolidated_model(path: str | Path) -> Any:
    """The model of sharded checkpoint ``path``, built from its ``config.json`` and filled with the full
    weights read from ``dcp/`` (on the CPU, in this process alone: no process group needed)."""
    from ..configuration_genolm import GenoLMConfig
    from ..parallel.state import load_full_model_state

    path = Path(path)
    config = GenoLMConfig.from_pretrained(path)
    model = model_class(config)(config)
    state = model.state_dict()
    load_full_model_state(path / DCP_DIR, state)
    model.load_state_dict(state)
    check_finite_weights(state, f"checkpoint {path}")
    return model.eval()


_NOT_EXPORTED = {MANIFEST_NAME, TRAINER_STATE_NAME, TRAINING_STATE_NAME, WEIGHTS_NAME, "config.json"}


def export_checkpoint(checkpoint: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write training checkpoint ``checkpoint`` (sharded or consolidated) as a Hugging Face model folder
    ``output`` (``model.safetensors``, ``config.json``, tokenizer files) that ``from_pretrained`` loads.

    A sharded checkpoint is consolidated on the CPU in this process (the machine needs the memory of the
    full fp32 model, not of the optimizer). The folder is written under a temporary name and renamed when
    complete. Raises :class:`InputDataError` for a folder that is not a complete checkpoint."""
    from ..outputs import atomic_folder, check_outputs

    checkpoint, output = Path(checkpoint), Path(output)
    if not checkpoint.is_dir():
        raise InputDataError(f"{checkpoint}: no such checkpoint folder")
    problem = checkpoint_problem(checkpoint, verify_hashes=True)
    if problem:
        raise InputDataError(f"{checkpoint}: not a complete genolm training checkpoint: {problem}")
    check_outputs((), {"CHECKPOINT": checkpoint}, folders={"OUTPUT": output}, overwrite=overwrite)
    if is_sharded_checkpoint(checkpoint):
        model = consolidated_model(checkpoint)
    else:
        from ..configuration_genolm import GenoLMConfig

        model = model_class(GenoLMConfig.from_pretrained(checkpoint)).from_pretrained(checkpoint)
    with atomic_folder(output, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        for file in checkpoint.iterdir():  # the tokenizer's files
            if file.is_file() and file.name not in _NOT_EXPORTED and not file.name.endswith(".pt"):
                shutil.copy2(file, tmp / file.name)
    return output


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
    return _load_weights_only(Path(path) / TRAINING_STATE_NAME)


def _load_weights_only(file: Path) -> Any:
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
    "DCP_DIR",
    "FORMATS",
    "MANIFEST_NAME",
    "TRAINER_STATE_NAME",
    "TRAINING_STATE_NAME",
    "ResumedState",
    "ShardedSave",
    "checkpoint_format",
    "checkpoint_name",
    "checkpoint_problem",
    "consolidated_model",
    "export_checkpoint",
    "file_sha256",
    "is_sharded_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_training_state",
    "process_state_name",
    "prune_checkpoints",
    "rng_state",
    "save_checkpoint",
    "save_sharded_checkpoint",
    "set_rng_state",
]
