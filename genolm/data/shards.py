"""Pre-tokenised windows on disk: Parquet (or Arrow IPC) shards written once, streamed back fast.

Layout of a shard folder::

    OUT_DIR/genolm_shards.json                   # tokenizer, window options, weights, row counts
    OUT_DIR/<split>/<species>/part-00000.parquet  # one file per non-empty planned shard

Each file holds the rows of :func:`genolm.data.genome_dataset` for one shard of one genome (strands
and order drawn at writing time): ``input_ids`` (fixed-size list of int32, ``max_tokens + 1``),
``length`` (tokens including ``<cls>``; the attention mask is ``1`` on the first ``length`` ids),
``species``, ``seq_id``, ``start``, ``end``, ``strand`` and optionally ``softmask`` (float32 list).
:func:`genolm.data.genome_dataset` recognises such a folder and streams it back with the same
columns, mixing genomes by their manifest weights.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from genolm import defaults
from genolm.data.sources import GenomeFile, resolve_source
from genolm.data.windows import (
    SPLITS,
    TokenGeometry,
    WindowOptions,
    _seed_sequence,
    _shard_rows,
    _wanted,
    as_entries,
    mix,
    plan_shards,
    window_features,
)
from genolm.errors import ConfigError
from genolm.genome.fasta import GenomeDataError
from genolm.outputs import atomic_folder, check_outputs

logger = logging.getLogger(__name__)

METADATA_FILE = "genolm_shards.json"
FORMAT_NAME = "genolm-shards"
_SUFFIX = {"parquet": ".parquet", "arrow": ".arrow"}


def is_shard_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`prepare_shards`."""
    try:
        return (Path(path) / METADATA_FILE).is_file()
    except (OSError, ValueError):
        return False


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "genome"


def _schema(width: int, softmask: bool):
    import pyarrow as pa

    fields = [
        pa.field("input_ids", pa.list_(pa.int32(), width)),
        pa.field("length", pa.int32()),
        pa.field("species", pa.string()),
        pa.field("seq_id", pa.string()),
        pa.field("start", pa.int64()),
        pa.field("end", pa.int64()),
        pa.field("strand", pa.string()),
    ]
    if softmask:
        fields.append(pa.field("softmask", pa.list_(pa.float32(), width)))
    return pa.schema(fields)


def _table(rows: list[dict[str, Any]], schema):
    import pyarrow as pa

    width = schema.field("input_ids").type.list_size
    ids = np.stack([r["input_ids"] for r in rows]).astype(np.int32)
    columns = {
        "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.ravel()), width),
        "length": pa.array(np.fromiter((int(r["attention_mask"].sum()) for r in rows), np.int32, len(rows))),
        "species": pa.array([r["species"] for r in rows], pa.string()),
        "seq_id": pa.array([r["seq_id"] for r in rows], pa.string()),
        "start": pa.array(np.fromiter((r["start"] for r in rows), np.int64, len(rows))),
        "end": pa.array(np.fromiter((r["end"] for r in rows), np.int64, len(rows))),
        "strand": pa.array([r["strand"] for r in rows], pa.string()),
    }
    if "softmask" in schema.names:
        soft = np.stack([r["softmask"] for r in rows]).astype(np.float32)
        columns["softmask"] = pa.FixedSizeListArray.from_arrays(pa.array(soft.ravel()), width)
    return pa.table(columns, schema=schema)


class _Writer:
    def __init__(self, path: Path, schema, file_format: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        if file_format == "parquet":
            self._writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
            self._write = self._writer.write_table
        else:
            self._sink = pa.OSFile(str(self.tmp), "wb")
            self._writer = pa.ipc.new_file(self._sink, schema)
            self._write = self._writer.write_table

    def write(self, table) -> None:
        self._write(table)

    def close(self) -> None:
        self._writer.close()
        if hasattr(self, "_sink"):
            self._sink.close()
        os.replace(self.tmp, self.path)


def _write_shard(job: dict) -> dict:
    """Write one planned shard to one file (runs in a worker process with ``num_proc > 1``)."""
    options: WindowOptions = job["options"]
    geometry = TokenGeometry(job["tokenizer"])
    shard = job["shard"]
    rng = _seed_sequence(options.seed, f"{job['species']}\tshard {shard[1]}")
    schema = _schema(options.max_tokens + 1, options.softmask)
    writer = None
    rows: list[dict[str, Any]] = []
    n_rows = n_tokens = 0

    def flush():
        nonlocal writer, rows
        if rows:
            if writer is None:
                job["path"].parent.mkdir(parents=True, exist_ok=True)
                writer = _Writer(job["path"], schema, job["format"])
            writer.write(_table(rows, schema))
            rows = []

    for row in _shard_rows(shard, job["files"], job["species"], geometry, options, rng):
        rows.append(row)
        n_rows += 1
        n_tokens += int(row["attention_mask"].sum()) - 1
        if len(rows) == job["rows_per_group"]:
            flush()
    flush()
    if writer is not None:
        writer.close()
    return {"path": str(job["path"]), "rows": n_rows, "tokens": n_tokens}


def _block_counts(
    resolved: list[tuple[GenomeFile, ...]], species: list[str], options: WindowOptions, splits: tuple[str, ...]
) -> list[dict[str, int]]:
    """Blocks per split of each genome (indexed files only; streamed files are not planned ahead)."""
    counts = []
    for files, name in zip(resolved, species, strict=True):
        per_split = dict.fromkeys(splits, 0)
        for split in splits:
            split_options = WindowOptions(**{**asdict(options), "split": split})
            for genome_file in files:
                if genome_file.indexed:
                    for record in genome_file.open_indexed().records:
                        per_split[split] += sum(
                            _wanted(name, record.name, block_index, split_options)
                            for block_index in range(-(-record.length // options.block_size))
                        )
        counts.append(per_split)
    return counts


def choose_block_size(
    resolved: list[tuple[GenomeFile, ...]],
    species: list[str],
    options: WindowOptions,
    splits: tuple[str, ...],
    window_bases: int,
) -> int:
    """The largest block size, from ``options.block_size`` halving down to one full window (``window_bases``),
    at which every genome has at least one block in every requested split with a non-zero fraction.

    Small genomes (a chloroplast, a 1 Mb test excerpt) have only a few 1 Mb blocks, so the stable hash rule
    would leave their validation split empty; smaller blocks give it data. Returns ``options.block_size``
    when no smaller block helps.
    """
    fractions = {"train": 1.0, "validation": options.validation_fraction, "test": options.test_fraction}
    needed = tuple(split for split in splits if fractions[split] > 0)
    block_size = options.block_size
    while True:
        trial = WindowOptions(**{**asdict(options), "block_size": block_size})
        if all(all(c[split] for split in needed) for c in _block_counts(resolved, species, trial, needed)):
            return block_size
        if block_size // 2 < window_bases:
            return options.block_size
        block_size //= 2


def prepare_shards(
    sources: Any,
    out_dir: str | Path,
    tokenizer,
    max_tokens: int = defaults.PREPARE_MAX_TOKENS,
    stride: int | None = None,
    *,
    splits: tuple[str, ...] = ("train", "validation"),
    num_shards: int = defaults.PREPARE_NUM_SHARDS,
    file_format: str = "parquet",
    num_proc: int = 1,
    rows_per_group: int = 1024,
    progress: bool = True,
    overwrite: bool = False,
    ncbi_url: str | None = None,
    cache_dir: str | Path | None = None,
    block_size: int | None = None,
    **window_options: Any,
) -> dict[str, Any]:
    """Tokenise genomes into Parquet/Arrow shards that :func:`genolm.data.genome_dataset` streams back.

    Args:
        sources: anything :func:`genolm.data.genome_dataset` accepts (typically a manifest).
        out_dir: output folder (must be empty or absent unless ``overwrite``).
        tokenizer, max_tokens, stride: as for :func:`genolm.data.genome_dataset`.
        splits: which splits to write (each into its own sub-folder).
        num_shards: files per genome and split (the blocks of a genome are dealt round-robin into them).
        file_format: ``"parquet"`` (zstd) or ``"arrow"`` (IPC file).
        num_proc: worker processes (shards are written in parallel).
        rows_per_group: rows per Parquet row group / Arrow record batch.
        progress: show a progress bar.
        block_size: bases per block (the unit of the held-out splits); default: 1 Mb, halved down to one window
            until every split of every genome gets data (:func:`choose_block_size`).
        **window_options: further :class:`WindowOptions` fields (``reverse_complement``, ``shuffle``,
            ``seed``, ``softmask``, ``validation_fraction``, ...).

    Returns:
        The metadata written to ``genolm_shards.json`` (rows and tokens per split and genome).
    """
    from tqdm.auto import tqdm

    if file_format not in _SUFFIX:
        raise ConfigError(f"file_format must be 'parquet' or 'arrow', not {file_format!r}")
    for split in splits:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected some of {SPLITS}")
    out_dir = Path(out_dir)
    check_outputs(
        {}, {"sources": sources if isinstance(sources, (str, os.PathLike)) else None},
        folders={"out_dir": out_dir}, overwrite=True,
    )
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise GenomeDataError(f"{out_dir}: output folder is not empty (pass overwrite=True / --overwrite)")
    base = WindowOptions(
        max_tokens=max_tokens,
        stride=stride,
        num_shards=num_shards,
        block_size=block_size or WindowOptions.block_size,
        **window_options,
    )
    entries = as_entries(sources)
    jobs = []
    metadata: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": 1,
        "file_format": file_format,
        "tokenizer": {
            "vocab_layout": getattr(tokenizer, "vocab_layout", None),
            "k": int(tokenizer.k),
            "cls_token_id": int(tokenizer.cls_token_id),
            "pad_token_id": int(tokenizer.pad_token_id),
        },
        "options": {k: v for k, v in asdict(base).items() if k != "split"},
        "splits": {},
    }
    resolved = [
        tuple(resolve_source(entry.source, entry.species, ncbi_url=ncbi_url, cache_dir=cache_dir)) for entry in entries
    ]
    if block_size is None:
        chosen = choose_block_size(
            resolved, [e.species for e in entries], base, splits, max_tokens * int(tokenizer.k)
        )
        if chosen != base.block_size:
            logger.info("block_size %d bases, so that every split of every genome gets data", chosen)
            base = WindowOptions(**{**asdict(base), "block_size": chosen})
        metadata["options"] = {k: v for k, v in asdict(base).items() if k != "split"}
    for split in splits:
        options = WindowOptions(**{**asdict(base), "split": split})
        split_meta: dict[str, Any] = {}
        folders: set[str] = set()
        for number, (entry, files) in enumerate(zip(entries, resolved, strict=True)):
            key = entry.species if entry.species not in split_meta else f"{entry.species}#{number}"
            name = _slug(entry.species)
            if name in folders:  # repeated or clashing species names: keep one folder per manifest row
                name = f"{name}-{number}"
            folders.add(name)
            folder = out_dir / split / name
            split_meta[key] = {"species": entry.species, "source": entry.source, "weight": entry.weight, "files": []}
            for shard in plan_shards(files, entry.species, options):
                if shard[0] == "blocks" and not shard[2]:
                    continue
                path = folder / f"part-{shard[1]:05d}{_SUFFIX[file_format]}"
                jobs.append(
                    {
                        "key": (split, key),
                        "shard": shard,
                        "files": files,
                        "species": entry.species,
                        "tokenizer": tokenizer,
                        "options": options,
                        "path": path,
                        "format": file_format,
                        "rows_per_group": rows_per_group,
                    }
                )
        metadata["splits"][split] = split_meta
    with atomic_folder(out_dir, overwrite=overwrite) as work:  # the folder appears complete, or not at all
        for job in jobs:
            job["path"] = work / job["path"].relative_to(out_dir)
        bar = tqdm(total=len(jobs), unit="shard", desc="tokenising", disable=not progress)
        results: list[tuple[tuple[str, str], dict]] = []
        try:
            if num_proc > 1 and len(jobs) > 1:
                with ProcessPoolExecutor(max_workers=num_proc) as pool:
                    for job, result in zip(jobs, pool.map(_write_shard, jobs), strict=True):
                        results.append((job["key"], result))
                        bar.update(1)
            else:
                for job in jobs:
                    results.append((job["key"], _write_shard(job)))
                    bar.update(1)
        finally:
            bar.close()
        for (split, key), result in results:
            if result["rows"]:
                meta = metadata["splits"][split][key]
                meta["files"].append(os.path.relpath(result["path"], work))
                meta["rows"] = meta.get("rows", 0) + result["rows"]
                meta["tokens"] = meta.get("tokens", 0) + result["tokens"]
        with open(work / METADATA_FILE, "w", encoding="utf-8") as fh:
            json.dump(metadata, fh, indent=2)
    warn_small_splits(metadata)
    return metadata


def warn_small_splits(metadata: dict[str, Any], batch_rows: int = defaults.SMALL_SPLIT_ROWS) -> list[str]:
    """Log a warning, naming the fix, for each genome whose split is empty or holds fewer than ``batch_rows``
    windows (less than one batch); returns the warnings."""
    options = metadata["options"]
    messages = []
    for split, genomes in metadata["splits"].items():
        for key, meta in genomes.items():
            rows = meta.get("rows", 0)
            if rows >= batch_rows:
                continue
            fix = (
                "a larger --validation-fraction / --test-fraction, or a smaller --block-size "
                f"(now {options['block_size']} bases)"
                if split != "train"
                else "smaller fractions held out, or a larger genome"
            )
            state = "is empty" if rows == 0 else f"has only {rows} windows (fewer than one batch of {batch_rows})"
            messages.append(f"split {split!r} of {key!r} {state}; use {fix}")
    for message in messages:
        logger.warning(message)
    return messages


def read_shard_metadata(path: str | Path) -> dict[str, Any]:
    """The ``genolm_shards.json`` of a shard folder, checked."""
    file = Path(path) / METADATA_FILE
    try:
        metadata = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise GenomeDataError(f"{file}: cannot read shard metadata: {err}") from None
    if metadata.get("format") != FORMAT_NAME:
        raise GenomeDataError(f"{file}: not a genolm shard folder (format={metadata.get('format')!r})")
    return metadata


def _check_compatible(metadata: dict, tokenizer, options: WindowOptions, path: Path) -> None:
    stored = metadata["tokenizer"]
    current = {
        "vocab_layout": getattr(tokenizer, "vocab_layout", None),
        "k": int(tokenizer.k),
        "cls_token_id": int(tokenizer.cls_token_id),
        "pad_token_id": int(tokenizer.pad_token_id),
    }
    for key, value in stored.items():
        if value is not None and current.get(key) is not None and current[key] != value:
            raise GenomeDataError(f"{path}: shards were tokenised with {key}={value!r}, the tokenizer has {current[key]!r}")
    stored_max = metadata["options"]["max_tokens"]
    if options.max_tokens != stored_max:
        raise GenomeDataError(f"{path}: shards hold windows of max_tokens={stored_max}, not {options.max_tokens}")
    if options.reverse_complement:
        raise GenomeDataError(f"{path}: strands of pre-tokenised shards were drawn when writing them; pass reverse_complement=0")
    if options.softmask and not metadata["options"].get("softmask"):
        raise GenomeDataError(f"{path}: shards were written without the softmask column")


def load_shards(path: str | Path, tokenizer, options: WindowOptions, stopping_strategy: str | None = None):
    """Stream a shard folder back as a :class:`datasets.IterableDataset` (same columns as windows).

    ``options.split`` picks the sub-folder (``None``: every split written). Each row group is a
    ``datasets`` shard; with ``options.shuffle`` the row groups are visited in a seeded order and the rows
    of each are permuted.
    """
    import pyarrow.parquet as pq
    from datasets import IterableDataset

    path = Path(path)
    metadata = read_shard_metadata(path)
    _check_compatible(metadata, tokenizer, options, path)
    splits = [options.split] if options.split else list(metadata["splits"])
    if options.split and options.split not in metadata["splits"]:
        raise GenomeDataError(f"{path}: split {options.split!r} was not written (have {list(metadata['splits'])})")
    per_species: dict[str, dict[str, Any]] = {}
    for split in splits:
        for key, meta in metadata["splits"][split].items():
            target = per_species.setdefault(key, {"weight": meta["weight"], "units": []})
            for relative in meta["files"]:
                file = path / relative
                if not file.exists():
                    raise GenomeDataError(f"{file}: shard file listed in {METADATA_FILE} is missing")
                if metadata["file_format"] == "parquet":
                    groups = pq.ParquetFile(file).num_row_groups
                else:
                    import pyarrow as pa

                    with pa.memory_map(str(file)) as source:
                        groups = pa.ipc.open_file(source).num_record_batches
                target["units"] += [(str(file), g, f"{relative}:{g}") for g in range(groups)]
    datasets_, weights = [], []
    for key, target in per_species.items():
        units = target["units"]
        if not units:
            continue
        if options.shuffle:
            order = _seed_sequence(options.seed, f"{key}\tshard files").permutation(len(units))
            units = [units[i] for i in order]
        datasets_.append(
            IterableDataset.from_generator(
                _generate_shard_rows,
                gen_kwargs={
                    "units": units,
                    "file_format": metadata["file_format"],
                    "softmask": options.softmask,
                    "shuffle": options.shuffle,
                    "seed": options.seed,
                },
                features=window_features(options.max_tokens, options.softmask),
            )
        )
        weights.append(target["weight"])
    return mix(datasets_, weights, options, stopping_strategy)


def _read_group(file: str, group: int, file_format: str):
    if file_format == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(file).read_row_group(group)
    import pyarrow as pa

    with pa.memory_map(file) as source:
        return pa.Table.from_batches([pa.ipc.open_file(source).get_batch(group)])


def _generate_shard_rows(
    units: list[tuple[str, int, str]], file_format: str, softmask: bool, shuffle: bool, seed: int
) -> Iterator[dict[str, Any]]:
    for file, group, name in units:
        table = _read_group(file, group, file_format)
        width = table.schema.field("input_ids").type.list_size
        n = table.num_rows
        ids = table.column("input_ids").combine_chunks().flatten().to_numpy().reshape(n, width).astype(np.int64)
        lengths = table.column("length").to_numpy()
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        species = table.column("species").to_pylist()
        seq_ids = table.column("seq_id").to_pylist()
        starts = table.column("start").to_pylist()
        ends = table.column("end").to_pylist()
        strands = table.column("strand").to_pylist()
        soft = None
        if softmask:
            soft = table.column("softmask").combine_chunks().flatten().to_numpy().reshape(n, width)
        order = _seed_sequence(seed, name).permutation(n) if shuffle else range(n)
        for i in order:
            row = {
                "input_ids": ids[i],
                "attention_mask": mask[i],
                "species": species[i],
                "seq_id": seq_ids[i],
                "start": starts[i],
                "end": ends[i],
                "strand": strands[i],
            }
            if soft is not None:
                row["softmask"] = soft[i]
            yield row
