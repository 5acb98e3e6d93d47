"""Remote files over fsspec (HTTP/HTTPS, or any fsspec URL): streaming reads with clear errors, and a
local cache that stores a remote FASTA as an indexed bgzip file."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import IO

import fsspec

from genolm.genome.fasta import GenomeDataError, iter_fasta_blocks

logger = logging.getLogger(__name__)


def _http_error(url: str, err: BaseException) -> GenomeDataError:
    if isinstance(err, FileNotFoundError):
        return GenomeDataError(f"HTTP 404 Not Found: {url}")
    status = getattr(err, "status", None)
    if status is not None:
        reason = getattr(err, "message", "") or ""
        return GenomeDataError(f"HTTP {status} {reason}: {url}".replace("  ", " "))
    return GenomeDataError(f"cannot fetch {url}: {type(err).__name__}: {err}")


def open_url(url: str) -> IO[bytes]:
    """Open ``url`` for sequential reading without downloading it whole (HTTP: a streamed GET)."""
    protocol = url.split("://", 1)[0]
    try:
        fs = fsspec.filesystem(protocol)
        if protocol in ("http", "https"):
            return fs.open(url, "rb", block_size=0)  # streamed, no range requests
        return fs.open(url, "rb")
    except GenomeDataError:
        raise
    except Exception as err:  # fsspec/aiohttp raise many types; report them with the URL
        raise _http_error(url, err) from None


def fetch_bytes(url: str) -> bytes:
    """Fetch a (small) remote file or directory listing."""
    protocol = url.split("://", 1)[0]
    try:
        return fsspec.filesystem(protocol).cat_file(url)
    except Exception as err:
        raise _http_error(url, err) from None


def cached_indexed_copy(location: str, cache_dir: str | Path, line_width: int = 60) -> Path:
    """Stream ``location`` once into ``cache_dir`` as a validated, bgzipped and faidx-indexed FASTA.

    Later calls return the cached path immediately. Records are rewrapped to ``line_width`` columns, case
    and IUPAC letters are kept. Returns the path of the ``.fa.gz`` (with ``.fai`` and ``.gzi`` beside it).
    """
    import pysam
    from pysam.libcbgzf import BGZFile

    digest = hashlib.sha256(str(location).encode()).hexdigest()[:16]
    base = Path(str(location).rstrip("/")).name
    for suffix in (".gz", ".bgz"):
        base = base.removesuffix(suffix)
    target = Path(cache_dir) / digest / f"{base}.gz"
    done = target.with_name(target.name + ".complete")
    if done.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.part{os.getpid()}")
    logger.info("caching %s -> %s", location, target)
    current = None
    with BGZFile(str(tmp), "wb") as out:
        # blocks start at record offsets that are multiples of line_width, so each one is whole lines
        for seq_id, _start, bases in iter_fasta_blocks(location, block_size=line_width * 100_000):
            if seq_id != current:
                out.write(f">{seq_id}\n".encode())
                current = seq_id
            lines = [bases[i : i + line_width] for i in range(0, len(bases), line_width)]
            out.write(b"\n".join(lines) + b"\n")
    pysam.faidx(str(tmp))  # index before moving into place, so readers never see a file without index
    for suffix in (".gzi", ".fai"):
        os.replace(f"{tmp}{suffix}", f"{target}{suffix}")
    os.replace(tmp, target)
    done.touch()
    return target

