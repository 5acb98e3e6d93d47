"""Output discipline shared by every genolm command.

- :func:`check_outputs` runs before any computing: it refuses an output that is one of the inputs (or lies
  inside an input folder, or holds one), an output under a file or in a folder that cannot be created, and an
  existing output folder that is not empty (unless ``overwrite``).
- :func:`atomic_file` and :func:`atomic_folder` write under a hidden temporary name beside the target and rename
  it into place only when the writing finished; on any error the temporary is removed, so the final path holds
  either the previous content or the complete new output, never a truncated one.
- :func:`run_lock` holds a lock file in a run folder (host, pid, start time) so that a second run into the same
  folder is refused, naming the first; :func:`claim_run_folder` adds the rule of the training recipes: a folder
  that holds another run is used only to ``resume`` it or to ``overwrite`` it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import socket
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from .errors import ConfigError, OutputPathError

__all__ = [
    "LOCK_NAME",
    "atomic_file",
    "atomic_folder",
    "check_outputs",
    "claim_run_folder",
    "clear_folder",
    "run_lock",
    "temporary_path",
]

LOCK_NAME = ".genolm.lock"
PathLike = str | os.PathLike


def _named(paths: Mapping[str, PathLike | None] | Iterable[PathLike | None]) -> list[tuple[str, Path]]:
    """``(label, path)`` pairs; ``None`` entries are dropped."""
    items = paths.items() if isinstance(paths, Mapping) else ((None, p) for p in paths)
    return [(label or str(path), Path(path)) for label, path in items if path is not None]


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _inside(child: Path, parent: Path) -> bool:
    """Whether ``child`` lies strictly inside folder ``parent`` (after resolving links)."""
    child, parent = child.resolve(), parent.resolve()
    return parent != child and parent in child.parents


def _creatable_parent(path: Path) -> str | None:
    """Why the folder holding ``path`` cannot exist or be written, or ``None``."""
    for ancestor in path.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{ancestor} is a file, not a folder"
            if not os.access(ancestor, os.W_OK | os.X_OK):
                return f"cannot create or write in {ancestor} (permission denied)"
            return None
    return None


def _folder_has_content(path: Path) -> bool:
    return any(entry.name != LOCK_NAME for entry in path.iterdir())


def check_outputs(
    outputs: Mapping[str, PathLike | None] | Iterable[PathLike | None],
    inputs: Mapping[str, PathLike | None] | Iterable[PathLike | None] = (),
    *,
    folders: Mapping[str, PathLike | None] | Iterable[PathLike | None] = (),
    overwrite: bool = False,
) -> None:
    """Refuse unusable output paths before any computing, in one line (:class:`OutputPathError`).

    Args:
        outputs: output files, as paths or ``{label: path}`` (the label, e.g. ``"--out"``, names it in messages).
        inputs: input files and folders, same forms; ``None`` entries are ignored.
        folders: output folders (a converted checkpoint, a run folder, a bigWig folder).
        overwrite: allow an output folder that exists and is not empty (the caller then replaces or clears it).

    Raises:
        OutputPathError: an output is an input, lies inside an input folder or holds an input, lies under a file
            or where no folder can be created; an output file path is a folder; an output folder is a file or
            is not empty (without ``overwrite``).
    """
    files, dirs, sources = _named(outputs), _named(folders), _named(inputs)
    for is_folder, (label, out) in [(False, f) for f in files] + [(True, d) for d in dirs]:
        where = f"{label} {out}" if label != str(out) else str(out)
        kind = "output folder" if is_folder else "output"
        for in_label, source in sources:
            in_where = f"{in_label} {source}" if in_label != str(source) else str(source)
            if _same(out, source):
                raise OutputPathError(f"{kind} {where} is also the input {in_where}; choose another output path")
            if source.is_dir() and _inside(out, source):
                raise OutputPathError(f"{kind} {where} lies inside the input folder {in_where}")
            if is_folder and _inside(source, out):
                raise OutputPathError(f"output folder {where} holds the input {in_where}")
        problem = _creatable_parent(out)
        if problem:
            raise OutputPathError(f"cannot write {kind} {where}: {problem}")
        if not is_folder and out.is_dir():
            raise OutputPathError(f"output {where} is a folder; give a file name")
        if is_folder and out.exists():
            if not out.is_dir():
                raise OutputPathError(f"output folder {where} is a file")
            if not overwrite and _folder_has_content(out):
                raise OutputPathError(
                    f"output folder {where} exists and is not empty; choose another folder or pass --overwrite"
                )


def temporary_path(path: PathLike) -> Path:
    """A hidden, unique name beside ``path`` that keeps its full name (and so its suffixes) at the end."""
    path = Path(path)
    return path.with_name(f".genolm-tmp-{secrets.token_hex(4)}-{path.name}")


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is fsync'ed and renamed to ``path``.

    On any error (or an interrupt) the temporary file is removed and ``path`` is left as it was. The parent
    folder is created if needed. A ``path`` that exists and is not a regular file (``/dev/null``, a named pipe)
    is written directly.
    """
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {tmp} for {path}")
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        _remove(tmp)
        if isinstance(err, OSError) and err.errno is not None and err.filename in (None, str(tmp)):
            err.filename = str(path)  # name the output the user asked for, not our temporary
        raise
    _fsync(path.parent)


@contextlib.contextmanager
def atomic_folder(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` to fill; on success it replaces ``path``.

    An existing ``path`` must be empty unless ``overwrite`` (it is then removed after the new folder is in
    place). On any error the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync(file)
        _fsync(tmp)
        if path.exists():
            if path.is_dir() and not overwrite and _folder_has_content(path):
                raise OutputPathError(f"output folder {path} is not empty; pass --overwrite to replace it")
            old = temporary_path(path)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync(path.parent)


def clear_folder(path: PathLike, names: Iterable[str]) -> None:
    """Remove the entries ``names`` of folder ``path`` that exist (files or folders)."""
    for name in names:
        _remove(Path(path) / name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(folder: PathLike) -> Iterator[Path]:
    """Hold ``folder/.genolm.lock`` (``flock``) while the block runs; the file records host, pid and start.

    A second run into the folder is refused with :class:`OutputPathError` naming the holder. A lock file left
    by a process that died on this host is taken over with a warning. The file is removed on exit.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    host = socket.gethostname()
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputPathError(
                f"{folder} is in use by another run ({holder}; lock file {path}); wait for it to finish or "
                "choose another output folder"
            ) from None
        # The holder may have removed the file between our open and our lock: then lock the new file.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _read_holder(fd, parsed=True)
    if isinstance(previous, dict) and previous.get("host") == host and not _pid_alive(int(previous.get("pid", 0))):
        warnings.warn(
            f"{path}: taking over the lock of run pid {previous.get('pid')} (started {previous.get('started')}), "
            "which ended without releasing it",
            stacklevel=3,
        )
    record = {"host": host, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    os.fsync(fd)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)  # closing releases the flock


def _read_holder(fd: int, parsed: bool = False):
    """The lock file's record: a dict (``parsed``) or a readable ``host ..., pid ..., started ...`` line."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except (ValueError, UnicodeDecodeError):
        data = None
    if parsed:
        return data
    if not isinstance(data, dict):
        return "holder unknown"
    return f"host {data.get('host')}, pid {data.get('pid')}, started {data.get('started')}"


@contextlib.contextmanager
def claim_run_folder(
    folder: PathLike,
    *,
    entries: Iterable[str],
    resume: bool = False,
    overwrite: bool = False,
    inputs: Mapping[str, PathLike | None] | Iterable[PathLike | None] = (),
    main_process: bool | None = None,
) -> Iterator[Path]:
    """Lock a training run folder for the block and check that this run may use it.

    A folder holding any of ``entries`` (e.g. ``log.jsonl``, ``checkpoints``) holds another run: it is refused
    unless ``resume`` (continue it) or ``overwrite`` (its ``entries`` are removed first, after checking that no
    input lies among them). Only the main process (``RANK`` 0 unless ``main_process`` says otherwise) locks and
    checks; the others use the folder as it is.

    Raises:
        OutputPathError: the folder holds another run, is locked by a live run, or cannot be a folder.
        ConfigError: both ``resume`` and ``overwrite``.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the output folder, --overwrite replaces it: pass one")
    if main_process is None:
        main_process = int(os.environ.get("RANK", "0")) == 0
    if not main_process:
        yield folder
        return
    entries = list(entries)
    check_outputs({}, folders={"output_dir": folder}, overwrite=True)
    created = not folder.exists()
    try:
        with run_lock(folder):
            found = [name for name in entries if (folder / name).exists()]
            if found and not (resume or overwrite):
                raise OutputPathError(
                    f"output_dir {folder} holds another run ({', '.join(found)}); pass --resume to continue it, "
                    "--overwrite to replace it, or choose another output_dir"
                )
            if found and overwrite:
                for name in found:
                    for label, source in _named(inputs):
                        if _same(folder / name, source) or _inside(source, folder / name):
                            raise OutputPathError(
                                f"--overwrite would remove {folder / name}, which holds the input {label} {source}"
                            )
                clear_folder(folder, found)
            yield folder
    except BaseException:
        # A run that stops before writing anything (bad data, bad settings) leaves no empty run folder behind.
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
