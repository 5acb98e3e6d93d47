"""Sequence embeddings from a genolm encoder (``genolm embed``).

Each record is tokenized whole (the NT k-mer rule, :meth:`GenoLMTokenizer.encode_genome`) and cut into
non-overlapping windows of at most ``max_tokens - 1`` tokens, each of which gets its own ``<cls>``. Windows
of all records are batched together, by length (longest first, so records of mixed length cost little
padding; :mod:`genolm.batching`), and the token states of one layer are pooled per record, in input order:

- ``"mean"``: the mean over every token of the record (``<cls>`` and padding excluded), which is exact
  across windows: window sums are added, then divided by the record's token count;
- ``"cls"``: the mean of the windows' ``<cls>`` states;
- ``"none"``: no pooling, the states of every token of the record in order, shape (tokens, hidden)
  (``<cls>`` excluded).

``layer`` indexes ``(embedding output, layer 1, ..., layer L)``, where layer L is taken after the final
LayerNorm, i.e. it is ``last_hidden_state`` (transformers' ESM reports its hidden states the same way):
``-1`` (default) is the model's output, ``0`` the token embeddings.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import defaults
from .batching import length_bucketed_batches
from .configuration_genolm import GenoLMConfig
from .errors import ConfigError, InputDataError, OutputPathError
from .genome import iter_records, read_records
from .modeling_genolm import GenoLMModel
from .outputs import atomic_file, check_outputs
from .parallel.devices import resolve_device, resolve_dtype
from .tokenization_genolm import GenoLMTokenizer

logger = logging.getLogger(__name__)

POOLING = ("mean", "cls", "none")
OUTPUT_SUFFIXES = (".parquet", ".npy", ".npz")


def load_encoder(
    checkpoint: str | Path,
    device: str | torch.device | None = defaults.DEVICE,
    dtype: str | torch.dtype | None = defaults.DTYPE,
    compile: bool = defaults.COMPILE,
) -> tuple[GenoLMModel, GenoLMTokenizer]:
    """Load the bare encoder and tokenizer of a checkpoint (any head is dropped).

    ``checkpoint`` is a genolm folder, a Hub id (downloaded), or a transformers ESM-format checkpoint such as
    the published NT / AgroNT weights (converted to genolm in a temporary folder, logits checked).
    ``device`` and ``dtype``: ``"auto"`` (or ``None``) is the first CUDA device, else the CPU, and float32.
    ``compile``: ``torch.compile`` each transformer layer (:func:`genolm.parallel.compile_layers`).
    """
    import tempfile

    import genolm
    from genolm.finetune.modeling import resolve_checkpoint
    from genolm.inference.scoring import load_pretrained

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    with tempfile.TemporaryDirectory(prefix="genolm-embed-") as work:
        path = resolve_checkpoint(str(checkpoint), work)
        if path is None:
            raise ConfigError(f"{checkpoint}: embeddings need trained weights, not a preset")
        config = GenoLMConfig.from_pretrained(path)
        # Load the saved architecture (no "unexpected head weights" report) and keep its encoder.
        architecture = (config.architectures or ["GenoLMModel"])[0]
        model_class = getattr(genolm, architecture, GenoLMModel)
        model = load_pretrained(model_class, path, dtype=torch_dtype).base_model
        tokenizer = GenoLMTokenizer.from_pretrained(path)
    model = model.to(device).eval()
    if compile:
        from .parallel import compile_layers

        compile_layers(model)
    return model, tokenizer


def _layer_states(model: GenoLMModel, batch: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """Token states (batch, tokens, hidden) of ``layer`` (see the module docstring)."""
    n_layers = model.config.num_hidden_layers
    if not -(n_layers + 1) <= layer <= n_layers:
        raise ConfigError(
            f"layer {layer} is out of range for a {n_layers}-layer model (use -{n_layers + 1}..{n_layers})"
        )
    want_all = layer not in (-1, n_layers)
    output = model(**batch, output_hidden_states=want_all)
    if not want_all:
        return output.last_hidden_state
    states = list(output.hidden_states[:-1]) + [output.last_hidden_state]
    return states[layer]


@torch.no_grad()
def embed(
    model: GenoLMModel,
    tokenizer: GenoLMTokenizer,
    records: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    pool: str = "mean",
    layer: int = -1,
    batch_size: int = 8,
    max_tokens: int | None = None,
    length_buckets: bool = True,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Embed sequences; returns ``{record id: array}`` in input order.

    Args:
        model: a :class:`GenoLMModel` (use :func:`load_encoder`), in eval mode.
        tokenizer: its tokenizer.
        records: ``{id: sequence}`` or ``(id, sequence)`` pairs.
        pool: ``"mean"``, ``"cls"`` or ``"none"``.
        layer: which hidden state (see the module docstring).
        batch_size: windows per forward pass.
        max_tokens: tokens per window, ``<cls>`` included (default: the model's context, ``config.max_tokens``).
        length_buckets: batch windows of similar length (less padding); else in input order.
        progress: show a progress bar.

    Returns:
        float32 arrays of shape (hidden,) for ``"mean"`` and ``"cls"``, (tokens, hidden) for ``"none"``.
    """
    if pool not in POOLING:
        raise ConfigError(f"pool must be one of {POOLING}, got {pool!r}")
    config: GenoLMConfig = model.config
    max_tokens = max_tokens or config.max_tokens
    if not 2 <= max_tokens <= config.max_tokens:
        raise ConfigError(
            f"max_tokens must be between 2 and the model's context ({config.max_tokens}), got {max_tokens}"
        )
    items = records.items() if isinstance(records, Mapping) else records
    # windows: (record index, window index, token ids without <cls>)
    ids: list[str] = []
    seen: set[str] = set()
    windows: list[tuple[int, int, np.ndarray]] = []
    n_windows: list[int] = []
    for index, (record_id, sequence) in enumerate(items):
        if record_id in seen:
            raise InputDataError(f"duplicate record id {record_id!r}")
        seen.add(record_id)
        tokens = tokenizer.encode_genome(sequence)
        if tokens.size == 0:
            raise InputDataError(f"record {record_id!r} is empty")
        ids.append(record_id)
        chunks = range(0, tokens.size, max_tokens - 1)
        n_windows.append(len(chunks))
        windows += [(index, w, tokens[start : start + max_tokens - 1]) for w, start in enumerate(chunks)]
    lengths = [chunk.size for _, _, chunk in windows]
    if length_buckets:
        batches = length_bucketed_batches(lengths, batch_size)
    else:
        batches = [list(range(i, min(i + batch_size, len(windows)))) for i in range(0, len(windows), batch_size)]
    hidden = config.hidden_size
    sums = np.zeros((len(ids), hidden), dtype=np.float64)
    counts = np.zeros(len(ids), dtype=np.int64)
    pieces: dict[int, dict[int, np.ndarray]] = {i: {} for i in range(len(ids))}
    device = next(model.parameters()).device
    for batch_index in tqdm(batches, desc="embed", unit="batch", disable=not progress):
        longest = max(lengths[i] for i in batch_index) + 1
        input_ids = np.full((len(batch_index), longest), tokenizer.pad_token_id, dtype=np.int64)
        attention = np.zeros((len(batch_index), longest), dtype=np.int64)
        for row, i in enumerate(batch_index):
            chunk = windows[i][2]
            input_ids[row, 0] = tokenizer.cls_token_id
            input_ids[row, 1 : chunk.size + 1] = chunk
            attention[row, : chunk.size + 1] = 1
        batch = {
            "input_ids": torch.from_numpy(input_ids).to(device),
            "attention_mask": torch.from_numpy(attention).to(device),
        }
        states = _layer_states(model, batch, layer).float().cpu().numpy()  # host sync, once per batch
        for row, i in enumerate(batch_index):
            record, w, chunk = windows[i]
            if pool == "cls":
                sums[record] += states[row, 0]
                counts[record] += 1
            elif pool == "mean":
                sums[record] += states[row, 1 : chunk.size + 1].sum(0)
                counts[record] += chunk.size
            else:
                pieces[record][w] = states[row, 1 : chunk.size + 1]
    if pool == "none":
        return {
            record_id: np.concatenate([pieces[i][w] for w in range(n_windows[i])]).astype(np.float32)
            for i, record_id in enumerate(ids)
        }
    pooled = (sums / counts[:, None]).astype(np.float32)
    return {record_id: pooled[i] for i, record_id in enumerate(ids)}


def write_embeddings(
    embeddings: Mapping[str, np.ndarray], out: str | Path, lengths: Mapping[str, int] | None = None
):
    """Write ``{id: array}`` to ``.parquet``, ``.npy`` or ``.npz`` (by the suffix of ``out``).

    - ``.parquet``: one row per record: ``id``, ``length`` (bp, when ``lengths`` is given), ``embedding``
      (list of float32; for unpooled embeddings a list of per-token lists).
    - ``.npy``: a (records, hidden) float32 matrix, pooled embeddings only; the record ids, one per line in
      row order, go to ``<out without .npy>.ids.txt``.
    - ``.npz``: one array per record id (``numpy.load(out)[record_id]``); works for every pooling.
    """
    out = Path(out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise OutputPathError(f"{out}: unsupported output format; use one of {', '.join(OUTPUT_SUFFIXES)}")
    ids = list(embeddings)
    if out.suffix == ".npz":
        with atomic_file(out) as tmp:
            np.savez(tmp, **embeddings)
    elif out.suffix == ".npy":
        if any(embeddings[i].ndim != 1 for i in ids):
            raise ConfigError(
                f"{out}: .npy holds pooled embeddings only; use .npz or .parquet with pool='none'"
            )
        with atomic_file(out) as tmp, atomic_file(out.with_suffix(".ids.txt")) as tmp_ids:
            np.save(tmp, np.stack([embeddings[i] for i in ids]) if ids else np.zeros((0, 0), np.float32))
            tmp_ids.write_text("".join(f"{i}\n" for i in ids))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {"id": pa.array(ids, type=pa.string())}
        if lengths is not None:
            columns["length"] = pa.array([int(lengths[i]) for i in ids], type=pa.int64())
        pooled = not ids or embeddings[ids[0]].ndim == 1
        value_type = pa.list_(pa.float32()) if pooled else pa.list_(pa.list_(pa.float32()))
        columns["embedding"] = pa.array([embeddings[i].tolist() for i in ids], type=value_type)
        with atomic_file(out) as tmp:
            pq.write_table(pa.table(columns), tmp)


def embed_fasta(
    checkpoint: str | Path,
    fasta: str | Path,
    out: str | Path | None = None,
    *,
    pool: str = "mean",
    layer: int = -1,
    batch_size: int = defaults.EMBED_BATCH_SIZE,
    max_tokens: int | None = None,
    device: str | None = defaults.DEVICE,
    dtype: str | None = defaults.DTYPE,
    compile: bool = defaults.COMPILE,
    chunk_records: int = 1000,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    workers=None,
) -> dict[str, np.ndarray]:
    """Embed every record of a FASTA file with a checkpoint and optionally write them (see :func:`embed`,
    :func:`write_embeddings`). Returns ``{record id: array}`` (on the main process; empty on the others).

    With ``out``, the records are embedded in chunks of ``chunk_records`` shared between the processes of a
    ``torchrun`` / ``accelerate launch`` job and kept for ``resume`` (see :mod:`genolm.inference.distributed`);
    the output is the same whatever the number of processes.
    """
    if out is not None and Path(out).suffix not in OUTPUT_SUFFIXES:
        raise OutputPathError(f"{out}: unsupported output format; use one of {', '.join(OUTPUT_SUFFIXES)}")
    if out is None:
        records = {record_id: sequence.upper() for record_id, sequence in read_records(fasta)}
        model, tokenizer = load_encoder(checkpoint, device=device, dtype=dtype, compile=compile)
        return embed(model, tokenizer, records, pool=pool, layer=layer, batch_size=batch_size,
                     max_tokens=max_tokens, progress=progress)
    from .inference.distributed import chunk_bounds, file_fingerprint, run_in_chunks, start_workers

    out = Path(out)
    outputs = {"--out": out}
    if out.suffix == ".npy":
        outputs["record ids"] = out.with_suffix(".ids.txt")
    check_outputs(outputs, {"--fasta": fasta, "--model": checkpoint})
    lengths = _record_lengths(fasta)  # reads (and checks) the FASTA before the model loads
    ids = list(lengths)
    workers = workers or start_workers(device)
    fingerprint = {
        "command": "embed",
        "fasta": file_fingerprint(fasta),
        "model": file_fingerprint(checkpoint) if Path(checkpoint).exists() else str(checkpoint),
        "options": {"pool": pool, "layer": layer, "max_tokens": max_tokens, "dtype": dtype,
                    "chunk_records": chunk_records},
    }
    model, tokenizer = load_encoder(checkpoint, device=workers.device or device, dtype=dtype, compile=compile)
    bounds = chunk_bounds(len(ids), chunk_records)
    records = read_records(fasta)
    done = 0  # records read from ``records``

    def write_chunk(chunk: int, path: Path) -> None:
        nonlocal done
        start, end = bounds[chunk]
        for _ in range(start - done):  # records of chunks that other processes embed
            next(records)
        block = {record_id: sequence.upper() for record_id, sequence in itertools.islice(records, end - start)}
        done = end
        embeddings = embed(model, tokenizer, block, pool=pool, layer=layer, batch_size=batch_size,
                           max_tokens=max_tokens, progress=progress and workers.world == 1 and len(bounds) == 1)
        _write_part(embeddings, path, lengths)

    collected: dict[str, np.ndarray] = {}

    def merge(parts: list[Path], path: Path) -> None:
        collected.update(_merge_parts(parts, path, out, ids, lengths))

    run_in_chunks(out, len(bounds), fingerprint, write_chunk, merge, resume=resume, overwrite=overwrite,
                  workers=workers, progress=progress and len(bounds) > 1)
    if workers.is_main:
        logger.info("wrote %d embeddings to %s", len(collected), out)
    return collected


def _record_lengths(fasta: str | Path) -> dict[str, int]:
    """Record ids (in order) and lengths of a FASTA; a repeated id is an error."""
    lengths: dict[str, int] = {}
    for record_id, blocks in iter_records(fasta, 1 << 24):
        if record_id in lengths:
            raise InputDataError(f"{fasta}: duplicate record id {record_id!r}")
        lengths[record_id] = sum(len(block) for block in blocks)
    return lengths


def _write_part(embeddings: dict[str, np.ndarray], path: Path, lengths: Mapping[str, int]) -> None:
    """One chunk's embeddings in the output's format (a ``.npy`` part holds the matrix only)."""
    if path.suffix == ".npy":
        if any(e.ndim != 1 for e in embeddings.values()):
            raise ConfigError(f"{path.name}: .npy holds pooled embeddings only; use .npz or .parquet with pool='none'")
        np.save(path, np.stack(list(embeddings.values())))  # path ends with .npy: saved under that name
    else:
        write_embeddings(embeddings, path, lengths)


_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # no time in the archive: the same bytes from any run


def _merge_parts(
    parts: list[Path], path: Path, out: Path, ids: list[str], lengths: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """Join the parts, in order, into ``path`` (formatted as ``out``); returns the embeddings."""
    import zipfile

    if not parts:
        write_embeddings({}, path, lengths)
        if out.suffix == ".npy":
            with atomic_file(out.with_suffix(".ids.txt")) as tmp_ids:
                tmp_ids.write_text("")
        return {}
    if out.suffix == ".npz":
        embeddings = {}
        with zipfile.ZipFile(path, "w", allowZip64=True) as target:
            for part in parts:
                with zipfile.ZipFile(part) as source, np.load(part) as arrays:
                    for info in source.infolist():
                        target.writestr(zipfile.ZipInfo(info.filename, _ZIP_TIME), source.read(info))
                    embeddings.update({name: arrays[name] for name in arrays.files})
        return embeddings
    if out.suffix == ".npy":
        matrices = [np.load(part, mmap_mode="r") for part in parts]
        merged = np.lib.format.open_memmap(path, "w+", np.float32, (len(ids), matrices[0].shape[1]))
        row = 0
        for matrix in matrices:
            merged[row : row + len(matrix)] = matrix
            row += len(matrix)
        merged.flush()
        with atomic_file(out.with_suffix(".ids.txt")) as tmp_ids:
            tmp_ids.write_text("".join(f"{i}\n" for i in ids))
        return {record_id: np.array(merged[i]) for i, record_id in enumerate(ids)}
    import pyarrow.parquet as pq

    embeddings = {}
    writer = None
    try:
        for part in parts:
            table_file = pq.ParquetFile(part)
            for group in range(table_file.num_row_groups):
                table = table_file.read_row_group(group)
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
                for record_id, values in zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()):
                    embeddings[record_id] = np.array(values, dtype=np.float32)
    finally:
        if writer is not None:
            writer.close()
    return embeddings


__all__ = ["POOLING", "embed", "embed_fasta", "load_encoder", "write_embeddings"]
