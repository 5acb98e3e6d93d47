"""Genome-scale inference split over processes and hosts, resumable after a kill.

A command's work is cut into a fixed number of **chunks** (blocks of VCF records, of positions, FASTA records),
numbered ``0 .. n_chunks - 1``; the cut depends on the inputs and options only, never on the number of
processes. :func:`run_in_chunks` gives every process its share, writes each finished chunk as one **part** in a
parts folder beside the output, and the main process concatenates the parts in chunk order into the output.
One process (a plain ``genolm vep``) runs the same code with a world of one.

**Parts folder** ``OUTPUT.genolm-parts/``: ``journal.json`` (the run's fingerprint: inputs' paths, sizes and
modification times, model, options, chunking), ``part-NNNNNNNN-NAME`` (chunk ``N``, written under a temporary
name and renamed when complete) and ``part-NNNNNNNN.json`` (its marker: size, sha256 and the chunk's counts,
written after the part). A chunk is done when its marker exists and the part matches it. The folder is removed
once the output is in place. It must be on a file system every process sees (hosts share it).

**Which process does what.** The chunks not yet done are dealt round-robin: the ``j``-th of them goes to rank
``j % world``. Resuming with another number of processes works: chunks are fixed, only the dealing changes.

**Resume.** ``resume=True`` keeps the parts that verify and computes the rest; a journal whose fingerprint
differs is refused (one line naming the differing keys). Without ``resume`` an existing parts folder is refused
unless ``overwrite`` (then it is cleared). The main process holds :func:`genolm.outputs.run_lock` on the folder,
so two runs cannot share it.

**Failures.** After every round of chunks (one chunk per process) the processes add up a failure flag (a gloo
all-reduce of two integers): a process whose chunk raised re-raises its error, the others stop with one line
pointing at it, so no process waits for a dead one. Every wait is bounded by the group's timeout
(``GENOLM_WORKERS_TIMEOUT``, seconds, default two hours). A process killed outright is caught by the
launcher (``torchrun`` stops the others).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import ConfigError, OutputPathError, UserError
from ..outputs import LOCK_NAME, atomic_file, run_lock

__all__ = [
    "PARTS_SUFFIX",
    "Workers",
    "WorkersStopped",
    "chunk_bounds",
    "concatenate",
    "file_fingerprint",
    "model_fingerprint",
    "parts_folder",
    "run_in_chunks",
    "start_workers",
]

PARTS_SUFFIX = ".genolm-parts"
JOURNAL = "journal.json"


class WorkersStopped(UserError):
    """This process stopped because another one failed (that one reports the cause)."""


@dataclass(frozen=True)
class Workers:
    """This process's place among the processes sharing a job.

    Attributes:
        rank: 0 .. world - 1 (``RANK`` of the launcher).
        world: number of processes (``WORLD_SIZE``).
        local_rank: index on this host (``LOCAL_RANK``): the GPU this process uses.
        device: the device for this process's model (``cuda:LOCAL_RANK`` with CUDA and several processes).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process merges the parts and reports (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process arrives here (bounded by the group's timeout)."""
        self.count_failures(False)

    def count_failures(self, failed: bool) -> int:
        """How many processes passed ``failed=True`` (every process must call it in the same order)."""
        if self.world == 1:
            return int(failed)
        from ..parallel.group import sum_over_group

        return sum_over_group([int(failed)])[0]

    def sum(self, values: list[int]) -> list[int]:
        """Element-wise sums of ``values`` over the processes."""
        if self.world == 1:
            return list(values)
        from ..parallel.group import sum_over_group

        return sum_over_group(values)


def start_workers(device: str | None = "auto") -> Workers:
    """This process's :class:`Workers`, from the launcher's environment (``torchrun`` / ``accelerate launch``
    set ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    Several processes join a gloo process group (it only carries flags; see :mod:`genolm.parallel.group`).
    ``device``: ``auto``/``None`` or ``cuda`` become ``cuda:LOCAL_RANK`` when CUDA is present and there are
    several processes; anything else (``cpu``, ``cuda:1``) is kept. A plain process starts no group.
    """
    from ..parallel.group import launched_world, start_group

    rank, world, local_rank = launched_world()
    if world <= 1:
        return Workers(device=device)
    start_group()
    if device in (None, "auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
        elif device == "cuda":
            device = "cuda"  # let the model loader report the missing GPU
    return Workers(rank=rank, world=world, local_rank=local_rank, device=device)


def chunk_bounds(n_items: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` cutting ``n_items`` into blocks of ``chunk_size`` (the last one shorter)."""
    if chunk_size < 1:
        raise ConfigError(f"chunk size {chunk_size}: expected a positive number")
    return [(start, min(start + chunk_size, n_items)) for start in range(0, n_items, chunk_size)]


def file_fingerprint(path: str | os.PathLike | None) -> Any:
    """What identifies an input for resuming: absolute path, size and modification time (of each file of a
    folder, recursively); ``None`` for ``None``."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        return {
            str(file.relative_to(path)): file_fingerprint(file)
            for file in sorted(path.rglob("*"))
            if file.is_file() and not file.name.startswith(".")
        }
    if not path.exists():
        return str(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def model_fingerprint(model) -> object:
    """What identifies the model for resuming: its folder's files, a Hub id, or a loaded model's config."""
    if isinstance(model, (str, os.PathLike)):
        return file_fingerprint(model) if Path(model).exists() else str(model)
    config = getattr(model, "config", None)
    described = config.to_json_string() if config is not None else type(model).__name__
    return {"class": type(model).__name__, "config_sha256": hashlib.sha256(described.encode()).hexdigest()}


def parts_folder(output: str | os.PathLike) -> Path:
    """The folder holding the parts of ``output`` while a run is under way."""
    output = Path(output)
    return output.with_name(output.name + PARTS_SUFFIX)


def _part_name(chunk: int, output: Path) -> str:
    return f"part-{chunk:08d}-{output.name}"


def _marker(folder: Path, chunk: int) -> Path:
    return folder / f"part-{chunk:08d}.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_marker(folder: Path, chunk: int, output: Path) -> dict | None:
    """The marker of ``chunk`` when it exists and its part matches it, else ``None``."""
    try:
        marker = json.loads(_marker(folder, chunk).read_text())
    except (OSError, ValueError):
        return None
    part = folder / _part_name(chunk, output)
    if not isinstance(marker, dict) or marker.get("chunk") != chunk or not part.is_file():
        return None
    if part.stat().st_size != marker.get("size") or _sha256(part) != marker.get("sha256"):
        return None
    return marker


def _normalised(fingerprint: Mapping[str, Any]) -> dict:
    return json.loads(json.dumps(fingerprint, sort_keys=True, default=str))


def _prepare_parts(
    folder: Path, output: Path, fingerprint: dict, n_chunks: int, *, resume: bool, overwrite: bool
) -> set[int]:
    """Check or start the parts folder (main process, lock held); the chunks already done."""
    journal = folder / JOURNAL
    entries = [entry for entry in folder.iterdir() if entry.name != LOCK_NAME]
    done: set[int] = set()
    if entries and not resume and not overwrite:
        raise OutputPathError(
            f"{folder} holds the parts of an unfinished run writing {output}; pass --resume to continue it, "
            "--overwrite to start over, or remove the folder"
        )
    if entries and resume and journal.exists():
        try:
            previous = json.loads(journal.read_text())
        except ValueError:
            previous = None
        if not isinstance(previous, dict) or not isinstance(previous.get("fingerprint"), dict):
            raise OutputPathError(f"{journal}: not a genolm journal; remove {folder} or pass --overwrite")
        before = previous["fingerprint"]
        changed = sorted(key for key in set(before) | set(fingerprint) if before.get(key) != fingerprint.get(key))
        if changed:
            raise UserError(
                f"--resume: {journal} records a run with other inputs or options ({', '.join(changed)} "
                "differ); rerun with the same ones, or pass --overwrite to start over"
            )
        done = {chunk for chunk in range(n_chunks) if _read_marker(folder, chunk, output) is not None}
    keep = {LOCK_NAME, JOURNAL} if resume else {LOCK_NAME}  # the journal was checked above
    prefixes = tuple(f"part-{c:08d}" for c in done)
    for entry in folder.iterdir():  # parts that do not verify, temporaries of a killed run
        if entry.name not in keep and not entry.name.startswith(prefixes or ("\0",)):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    if not journal.exists():
        with atomic_file(journal) as tmp:
            tmp.write_text(json.dumps({"output": str(output), "fingerprint": fingerprint}, indent=1))
    return done


def _write_part(folder: Path, output: Path, chunk: int, write_chunk: Callable[[int, Path], dict | None]) -> None:
    part = folder / _part_name(chunk, output)
    with atomic_file(part) as tmp:
        stats = write_chunk(chunk, tmp)
    marker = {"chunk": chunk, "size": part.stat().st_size, "sha256": _sha256(part), "stats": stats or {}}
    with atomic_file(_marker(folder, chunk)) as tmp:
        tmp.write_text(json.dumps(marker))


def run_in_chunks(
    output: str | os.PathLike,
    n_chunks: int,
    fingerprint: Mapping[str, Any],
    write_chunk: Callable[[int, Path], dict | None],
    merge: Callable[[list[Path], Path], None],
    *,
    resume: bool = False,
    overwrite: bool = False,
    workers: Workers | None = None,
    progress: bool = False,
) -> list[dict]:
    """Compute ``n_chunks`` chunks over the processes and merge them, in order, into ``output``.

    Every process calls it with the same arguments. See the module docstring for the parts folder, the
    dealing of chunks, resuming and failures.

    Args:
        output: the final file (written by the main process through :func:`genolm.outputs.atomic_file`).
        n_chunks: how many chunks (fixed by the inputs and options).
        fingerprint: JSON-able description of inputs and options (see :func:`file_fingerprint`); a resumed
            run must match it. ``n_chunks`` is added to it.
        write_chunk: ``write_chunk(i, path)`` writes chunk ``i`` to ``path`` (a file named like the output, so
            writers may pick the format by its suffixes) and may return JSON-able counts kept with the part.
            It may also write side files named ``part-NNNNNNNN.*`` (``N`` = ``i``) in ``path.parent``,
            complete before it returns; they are kept with the part.
        merge: ``merge(parts, path)`` concatenates the part files (in chunk order) into ``path`` (main only).
        resume: keep the parts of an interrupted run with the same fingerprint.
        overwrite: clear the parts of another run instead of refusing them.
        workers: from :func:`start_workers` (default: one process).
        progress: a progress bar of chunks on the main process.

    Returns:
        The counts returned by ``write_chunk`` for every chunk, in chunk order (on every process).

    Raises:
        OutputPathError: parts of another run without ``resume``/``overwrite``, or the folder is locked.
        UserError: ``resume`` with a different fingerprint. :class:`WorkersStopped` on the other processes.
    """
    output = Path(output)
    workers = workers or Workers()
    if resume and overwrite:
        raise ConfigError("--resume continues the run writing the output, --overwrite starts it over: pass one")
    folder = parts_folder(output)
    fingerprint = _normalised({**fingerprint, "n_chunks": n_chunks})
    with contextlib.ExitStack() as stack:
        failed = False
        if workers.is_main:
            try:
                stack.enter_context(run_lock(folder))
                _prepare_parts(folder, output, fingerprint, n_chunks, resume=resume, overwrite=overwrite)
            except Exception:
                failed = True
                workers.count_failures(True)
                raise
        if workers.count_failures(failed):
            raise WorkersStopped(f"stopped: the main process could not start the run writing {output}")
        # Every process lists the chunks done between two barriers: nobody writes a part in between.
        todo = [chunk for chunk in range(n_chunks) if not _marker(folder, chunk).exists()]
        workers.barrier()
        mine = todo[workers.rank :: workers.world]
        rounds = -(-len(todo) // workers.world)
        bar = tqdm(
            total=n_chunks, initial=n_chunks - len(todo), desc="chunks", unit="chunk",
            disable=not (progress and workers.is_main), leave=False,
        )
        try:
            for r in range(rounds):
                error = None
                if r < len(mine):
                    try:
                        _write_part(folder, output, mine[r], write_chunk)
                    except Exception as err:
                        if isinstance(err, OSError) and str(err.filename or "").startswith(str(folder)):
                            err.filename = str(output)  # name the output the user asked for, not a part
                        error = err
                n_failed, n_done = workers.sum([int(error is not None), int(error is None and r < len(mine))])
                if error is not None:
                    raise error
                if n_failed:
                    raise WorkersStopped(
                        f"stopped: {n_failed} other process(es) failed writing {output}; see their messages"
                    )
                bar.update(n_done)
        except BaseException:
            if workers.is_main and not any(folder.glob("part-*.json")):
                shutil.rmtree(folder, ignore_errors=True)  # nothing to resume: leave nothing behind
            raise
        finally:
            bar.close()
        stats = _chunk_stats(folder, n_chunks)
        workers.barrier()  # everyone has read the counts: the main process may now remove the folder
        if workers.is_main:
            missing = [chunk for chunk in range(n_chunks) if _read_marker(folder, chunk, output) is None]
            if missing:
                raise RuntimeError(f"{folder}: chunks {missing[:10]} have no verified part after the run")
            with atomic_file(output) as tmp:
                merge([folder / _part_name(chunk, output) for chunk in range(n_chunks)], tmp)
            shutil.rmtree(folder, ignore_errors=True)
    return stats


def _chunk_stats(folder: Path, n_chunks: int) -> list[dict]:
    """The counts recorded in the markers, in chunk order."""
    return [json.loads(_marker(folder, chunk).read_text()).get("stats", {}) for chunk in range(n_chunks)]


def concatenate(parts: list[Path], path: Path) -> None:
    """A ``merge`` for formats whose parts join byte by byte (text without a header, BGZF blocks)."""
    with open(path, "wb") as target:
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, target, 1 << 20)
