"""Tokenised genome windows streamed as a :class:`datasets.IterableDataset`.

How windows are made (all coordinates 0-based half-open, on the forward strand of the record):

1. Each record is cut into *blocks* of ``block_size`` bases at offsets ``0, block_size, 2*block_size``.
   Blocks are the unit of reading, of the train/validation/test split and of sharding.
2. A block is upper-cased, IUPAC codes become ``N``, and it is tokenised in one call of
   ``tokenizer.encode_genome`` (Nucleotide Transformer rule: k-mers left to right within ``ACGT``
   runs, leftovers and ``N`` as single-nucleotide tokens).
3. Runs of more than ``max_n_run`` ``N`` are dropped; they split the block into segments, so no
   window ever contains or crosses such a run.
4. Each segment is cut into windows of ``max_tokens`` sequence tokens every ``stride`` tokens; the last
   window of a segment may be shorter (``min_tokens`` drops very short ones). Windows never cross
   block boundaries. ``start``/``end`` are the genome coordinates of the bases the window covers.
5. A row is ``<cls>`` + the window's tokens, padded with ``<pad>`` to ``max_tokens + 1`` (static
   shapes; ``attention_mask`` is 0 on padding). On the ``-`` strand (reverse-complement augmentation,
   probability ``reverse_complement``) the window's bases are reverse-complemented and tokenised
   again; the token count is the same and ``start``/``end`` stay forward-strand coordinates.

NT used ``max_tokens=1000`` 6-mer tokens (+ ``<cls>``), about 6 kb.

Columns: ``input_ids`` (int64, ``max_tokens + 1``), ``attention_mask`` (int64), ``species``,
``seq_id``, ``start``, ``end``, ``strand`` (``"+"``/``"-"``) and, with ``softmask=True``, ``softmask``
(float32 per token: the fraction of the token's bases that are lower case in the FASTA, i.e.
soft-masked repeats; 0 for ``<cls>`` and padding). Rows are numpy arrays (no ``datasets`` features
are set, see :func:`window_features`); in a :class:`torch.utils.data.DataLoader` with workers,
``collate_fn=collate_windows`` keeps batches numpy, which passes between processes faster than tensors.

**Splits.** Each block goes to ``validation`` with probability ``validation_fraction``, to ``test``
with probability ``test_fraction`` and otherwise to ``train``, decided by a hash of
``(species, seq_id, block index)`` (``split_by="region"``) or of ``(species, seq_id)``
(``split_by="sequence"``: whole sequences are held out). The rule depends on nothing else, so the
split is identical across runs, machines, shard counts and worker counts (for a given
``block_size``). ``split=None`` keeps every block.

**Sharding and order.** The blocks of a genome are dealt round-robin into ``num_shards`` shards (after
a seeded permutation with ``shuffle=True``); a local FASTA without an index, or a remote one without
``cache_dir``, is a single extra shard read sequentially. ``datasets`` gives each rank
(:func:`datasets.distributed.split_dataset_by_node`) and each dataloader worker its own shards, so every
window is produced exactly once per epoch. With ``shuffle=True`` the windows of every
``shuffle_blocks`` consecutive blocks of a shard are also permuted (a shuffle buffer of about
``shuffle_blocks * block_size`` bases). All randomness is seeded by ``seed`` and the shard, so
``state_dict()``/``load_state_dict()`` resume the stream exactly (``datasets`` replays the current
shard up to the saved position, so resuming costs at most one shard of tokenisation; with dataloader
workers use ``torchdata``'s ``StatefulDataLoader``). Pick ``num_shards`` as a multiple of
``world_size * num_workers`` so that every rank and worker gets whole shards. ``ds.set_epoch(e)`` reorders the shards of later epochs; pass a
different ``seed`` per epoch to also redraw strands and buffer order.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genolm.data.manifest import MANIFEST_SUFFIXES, ManifestEntry, load_manifest
from genolm.data.ncbi import is_accession
from genolm.data.sources import GenomeFile, default_species, resolve_source
from genolm.errors import ConfigError
from genolm.genome.bases import LOWER, TO_ACGTN, reverse_complement
from genolm.genome.fasta import GenomeDataError, is_url, iter_fasta_blocks

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
WINDOW_COLUMNS = ("input_ids", "attention_mask", "species", "seq_id", "start", "end", "strand")


@dataclass(frozen=True)
class WindowOptions:
    """How genomes are cut into windows; see the module docstring."""

    max_tokens: int = 1000
    stride: int | None = None
    max_n_run: int = 50
    min_tokens: int = 1
    reverse_complement: float = 0.0
    softmask: bool = False
    shuffle: bool = False
    seed: int = 0
    block_size: int = 1_000_000
    shuffle_blocks: int = 16
    num_shards: int = 64
    split: str | None = "train"
    validation_fraction: float = 0.01
    test_fraction: float = 0.0
    split_by: str = "region"
    include: str | None = None
    exclude: str | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.stride is not None and not 1 <= self.stride:
            raise ConfigError(f"stride must be >= 1, got {self.stride}")
        if not 0.0 <= self.reverse_complement <= 1.0:
            raise ConfigError(f"reverse_complement is a probability in [0, 1], got {self.reverse_complement}")
        if self.split not in (None, *SPLITS):
            raise ConfigError(f"split must be one of {SPLITS} or None, got {self.split!r}")
        if self.split_by not in ("region", "sequence"):
            raise ConfigError(f"split_by must be 'region' or 'sequence', got {self.split_by!r}")
        if not (0 <= self.validation_fraction and 0 <= self.test_fraction and self.validation_fraction + self.test_fraction <= 1):
            raise ConfigError("validation_fraction and test_fraction must be >= 0 and sum to at most 1")
        if self.block_size < 1 or self.num_shards < 1 or self.shuffle_blocks < 1 or self.min_tokens < 1:
            raise ConfigError("block_size, num_shards, shuffle_blocks and min_tokens must be >= 1")
        if self.max_n_run < 0:
            raise ConfigError(f"max_n_run must be >= 0, got {self.max_n_run}")

    @property
    def step(self) -> int:
        return self.stride or self.max_tokens


def _unit_float(key: str) -> float:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_of(species: str, seq_id: str, block_index: int, options: WindowOptions) -> str:
    """The split (``train``/``validation``/``test``) a block belongs to; see the module docstring."""
    key = f"{species}\t{seq_id}" if options.split_by == "sequence" else f"{species}\t{seq_id}\t{block_index}"
    u = _unit_float(key)
    if u < options.validation_fraction:
        return "validation"
    if u < options.validation_fraction + options.test_fraction:
        return "test"
    return "train"


def _wanted(species: str, seq_id: str, block_index: int, options: WindowOptions) -> bool:
    if options.include and not re.search(options.include, seq_id):
        return False
    if options.exclude and re.search(options.exclude, seq_id):
        return False
    return options.split is None or split_of(species, seq_id, block_index, options) == options.split


def _seed_sequence(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "big")])


class TokenGeometry:
    """The tokenizer plus the number of bases each token id covers (k for k-mers, 1 for nucleotides)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.k = int(tokenizer.k)
        self.cls = int(tokenizer.cls_token_id)
        self.pad = int(tokenizer.pad_token_id)
        if hasattr(tokenizer, "kmer_ids") and hasattr(tokenizer, "nucleotide_ids"):
            kmer_ids = np.asarray(tokenizer.kmer_ids, dtype=np.int64)
            nucleotide_ids = np.asarray(list(tokenizer.nucleotide_ids.values()), dtype=np.int64)
            size = int(max(kmer_ids.max(), nucleotide_ids.max())) + 1
            lengths = np.zeros(size, dtype=np.int64)
            lengths[kmer_ids] = self.k
            lengths[nucleotide_ids] = 1
        else:
            vocab = tokenizer.get_vocab()
            lengths = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
            for token, index in vocab.items():
                if token and set(token) <= set("ACGTN"):
                    lengths[index] = len(token)
        self.lengths = lengths

    def encode(self, acgtn: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (int64) and the number of bases of each token."""
        ids = np.asarray(self.tokenizer.encode_genome(acgtn), dtype=np.int64)
        lengths = self.lengths[ids]
        return ids, lengths


def _segments(clean: bytes, starts: np.ndarray, n_tokens: int, max_n_run: int) -> list[tuple[int, int]]:
    """Token ranges between the N runs longer than ``max_n_run`` (whose tokens are dropped)."""
    is_n = np.frombuffer(clean, dtype=np.uint8) == ord("N")
    if not is_n.any():
        return [(0, n_tokens)]
    edges = np.diff(np.concatenate(([0], is_n.view(np.int8), [0])))
    run_starts = np.flatnonzero(edges == 1)
    run_ends = np.flatnonzero(edges == -1)
    long = (run_ends - run_starts) > max_n_run
    if not long.any():
        return [(0, n_tokens)]
    # every N is its own token, so the tokens of a run are those starting inside it
    cut_from = np.searchsorted(starts, run_starts[long])
    cut_to = np.searchsorted(starts, run_ends[long])
    bounds = [0, *np.column_stack([cut_from, cut_to]).ravel().tolist(), n_tokens]
    return [(a, b) for a, b in zip(bounds[::2], bounds[1::2], strict=True) if b > a]


def block_windows(
    bases: bytes,
    offset: int,
    species: str,
    seq_id: str,
    geometry: TokenGeometry,
    options: WindowOptions,
    rng: np.random.Generator | None = None,
) -> list[dict[str, Any]]:
    """The window rows of one block of bases starting at record position ``offset``."""
    clean = bases.translate(TO_ACGTN)
    ids, lengths = geometry.encode(clean)
    if len(ids) and not lengths.all():
        bad = int(ids[np.argmin(lengths)])
        raise ValueError(f"tokenizer returned id {bad}, which is neither a k-mer nor a nucleotide token")
    ends = np.cumsum(lengths)
    starts = ends - lengths
    if len(ids) and ends[-1] != len(clean):
        raise ValueError(f"tokens cover {ends[-1]} bases of a {len(clean)}-base block ({seq_id}:{offset})")
    max_tokens, step, min_tokens = options.max_tokens, options.step, options.min_tokens
    windows: list[tuple[int, int]] = []
    for a, b in _segments(clean, starts, len(ids), options.max_n_run):
        w = a
        while True:
            e = min(w + max_tokens, b)
            if e - w >= min_tokens:
                windows.append((w, e))
            if e >= b:
                break
            w += step
    if not windows:
        return []
    minus = rng.random(len(windows)) < options.reverse_complement if options.reverse_complement > 0 else None
    lower_cum = None
    if options.softmask:
        lower_cum = np.concatenate(([0], np.cumsum(LOWER[np.frombuffer(bases, dtype=np.uint8)])))
    width = max_tokens + 1
    rows = []
    for i, (w, e) in enumerate(windows):
        n = e - w
        begin, finish = int(starts[w]), int(ends[e - 1])
        reverse = minus is not None and bool(minus[i])
        if reverse:
            tokens, token_lengths = geometry.encode(reverse_complement(clean[begin:finish]))
            if len(tokens) != n:
                raise RuntimeError(f"reverse strand gave {len(tokens)} tokens instead of {n} at {seq_id}:{begin}")
        else:
            tokens = ids[w:e]
        input_ids = np.full(width, geometry.pad, dtype=np.int64)
        input_ids[0] = geometry.cls
        input_ids[1 : n + 1] = tokens
        attention_mask = np.zeros(width, dtype=np.int64)
        attention_mask[: n + 1] = 1
        row = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "species": species,
            "seq_id": seq_id,
            "start": offset + begin,
            "end": offset + finish,
            "strand": "-" if reverse else "+",
        }
        if lower_cum is not None:
            fraction = np.zeros(width, dtype=np.float32)
            if reverse:
                token_ends = np.cumsum(token_lengths)
                hi, lo = finish - (token_ends - token_lengths), finish - token_ends
                fraction[1 : n + 1] = (lower_cum[hi] - lower_cum[lo]) / token_lengths
            else:
                fraction[1 : n + 1] = (lower_cum[ends[w:e]] - lower_cum[starts[w:e]]) / lengths[w:e]
            row["softmask"] = fraction
        rows.append(row)
    return rows


# --- planning and generation --------------------------------------------------------------------
def plan_shards(files: Sequence[GenomeFile], species: str, options: WindowOptions) -> list[tuple]:
    """The shards of one genome: ``num_shards`` lists of indexed blocks, plus one per streamed file.

    An indexed shard is ``("blocks", shard_id, ((file_index, seq_id, start, end), ...))``; a streamed
    one is ``("stream", shard_id, file_index)``. The shard id seeds the shard's random generator.
    """
    blocks = []
    streams = []
    for file_index, genome_file in enumerate(files):
        if not genome_file.indexed:
            streams.append(file_index)
            continue
        for record in genome_file.open_indexed().records:
            for block_index in range(math.ceil(record.length / options.block_size)):
                if _wanted(species, record.name, block_index, options):
                    start = block_index * options.block_size
                    blocks.append((file_index, record.name, start, min(start + options.block_size, record.length)))
    shards: list[tuple] = []
    if blocks:
        if options.shuffle:
            order = _seed_sequence(options.seed, f"{species}\tblocks").permutation(len(blocks))
            blocks = [blocks[i] for i in order]
        shards = [("blocks", i, tuple(blocks[i :: options.num_shards])) for i in range(options.num_shards)]
    return shards + [("stream", len(shards) + i, file_index) for i, file_index in enumerate(streams)]


def _generate_windows(
    shards: list[tuple],
    files: tuple[GenomeFile, ...],
    species: str,
    tokenizer,
    options: WindowOptions,
) -> Iterator[dict[str, Any]]:
    """``datasets`` generator: the rows of the given shards (one shard per call when sharded)."""
    geometry = TokenGeometry(tokenizer)
    for shard in shards:
        rng = _seed_sequence(options.seed, f"{species}\tshard {shard[1]}")
        yield from _shard_rows(shard, files, species, geometry, options, rng)


def _shard_blocks(shard: tuple, files: tuple[GenomeFile, ...], species: str, options: WindowOptions):
    kind, _shard_id, payload = shard
    if kind == "blocks":
        readers: dict[int, Any] = {}
        try:
            for file_index, seq_id, start, end in payload:
                if file_index not in readers:
                    readers[file_index] = files[file_index].open_indexed()
                yield seq_id, start, readers[file_index].fetch(seq_id, start, end)
        finally:
            for reader in readers.values():
                reader.close()
    else:
        for seq_id, start, bases in iter_fasta_blocks(files[payload].location, options.block_size):
            if _wanted(species, seq_id, start // options.block_size, options):
                yield seq_id, start, bases


def _shard_rows(shard, files, species, geometry, options, rng) -> Iterator[dict[str, Any]]:
    buffer: list[dict[str, Any]] = []
    n_blocks = 0
    for seq_id, start, bases in _shard_blocks(shard, files, species, options):
        buffer += block_windows(bases, start, species, seq_id, geometry, options, rng)
        n_blocks += 1
        if n_blocks == options.shuffle_blocks:
            yield from _drain(buffer, options, rng)
            buffer, n_blocks = [], 0
    yield from _drain(buffer, options, rng)


def _drain(buffer: list, options: WindowOptions, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    if options.shuffle and buffer:
        for i in rng.permutation(len(buffer)):
            yield buffer[i]
    else:
        yield from buffer


# --- public entry point ------------------------------------------------------------------------
def as_entries(sources: Any) -> list[ManifestEntry]:
    """Normalise ``sources`` (manifest path, source string, ``{species: source}``, list) to manifest entries."""
    if isinstance(sources, (str, Path)):
        text = str(sources)
        if not is_url(text) and not is_accession(text) and Path(text).suffix.lower() in MANIFEST_SUFFIXES:
            return load_manifest(text)
        return [ManifestEntry(default_species(text), text)]
    if isinstance(sources, ManifestEntry):
        return [sources]
    if isinstance(sources, Mapping):
        if "source" in sources:
            return as_entries([sources])
        return [ManifestEntry(str(species), str(source)) for species, source in sources.items()]
    if isinstance(sources, Sequence):
        entries = []
        for item in sources:
            if isinstance(item, ManifestEntry):
                entries.append(item)
            elif isinstance(item, Mapping):
                extra = {k: str(v) for k, v in item.items() if k not in ("species", "source", "weight")}
                source = str(item["source"])
                entries.append(
                    ManifestEntry(str(item.get("species") or default_species(source)), source, float(item.get("weight", 1.0)), extra)
                )
            else:
                entries.extend(as_entries(item))
        if not entries:
            raise ConfigError("no genome sources given")
        return entries
    raise TypeError(f"cannot interpret {type(sources).__name__} as genome sources")


def genome_dataset(
    sources: Any,
    tokenizer,
    max_tokens: int = 1000,
    stride: int | None = None,
    *,
    split: str | None = "train",
    validation_fraction: float = 0.01,
    test_fraction: float = 0.0,
    split_by: str = "region",
    max_n_run: int = 50,
    min_tokens: int = 1,
    reverse_complement: float | bool = 0.0,
    softmask: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    block_size: int = 1_000_000,
    shuffle_blocks: int = 16,
    num_shards: int = 64,
    include: str | None = None,
    exclude: str | None = None,
    stopping_strategy: str | None = None,
    ncbi_url: str | None = None,
    cache_dir: str | Path | None = None,
):
    """Stream tokenised windows of one or more genomes as a :class:`datasets.IterableDataset`.

    Args:
        sources: a FASTA file / folder / URL / NCBI accession, a manifest (``.tsv``/``.yaml``), a
            ``{species: source}`` mapping, a list of those or of :class:`ManifestEntry`, or a folder
            written by :func:`genolm.data.prepare_shards` (pre-tokenised; read back as is).
        tokenizer: a :class:`genolm.GenoLMTokenizer` (anything with ``encode_genome``, ``k`` and the
            special token ids).
        max_tokens: sequence tokens per window; rows have ``max_tokens + 1`` ids with ``<cls>``.
        stride: tokens between window starts (default ``max_tokens``: no overlap).
        split: ``"train"``, ``"validation"``, ``"test"`` or ``None`` (everything).
        validation_fraction, test_fraction, split_by: the stable hold-out rule (module docstring).
        max_n_run: runs of more than this many ``N`` are excluded and never inside a window.
        min_tokens: drop windows with fewer sequence tokens (segment ends, short sequences).
        reverse_complement: probability that a window is read from the ``-`` strand (``True`` = 0.5).
        softmask: add the per-token ``softmask`` column (fraction of lower-case bases).
        shuffle, seed, shuffle_blocks: seeded block order and shuffle buffer.
        block_size, num_shards: blocking and sharding (module docstring).
        include, exclude: regular expressions on sequence ids (e.g. ``exclude="chloroplast|Mt|Pt"``).
        stopping_strategy: how a multi-genome mixture ends (:func:`datasets.interleave_datasets`);
            default ``"all_exhausted"`` for training and ``"all_exhausted_without_replacement"``
            (every window exactly once) for validation/test.
        ncbi_url: base URL for NCBI accessions (default ``$GENOLM_NCBI_URL`` or NCBI).
        cache_dir: keep indexed bgzip copies of remote / unindexed files here.

    Returns:
        A ``datasets.IterableDataset`` of rows with the columns described in the module docstring.
        With several genomes, rows are interleaved with probabilities proportional to their weights.
    """
    from datasets import IterableDataset

    from genolm.data.shards import is_shard_dir, load_shards

    if isinstance(reverse_complement, bool):
        reverse_complement = 0.5 if reverse_complement else 0.0
    options = WindowOptions(
        max_tokens=max_tokens,
        stride=stride,
        max_n_run=max_n_run,
        min_tokens=min_tokens,
        reverse_complement=float(reverse_complement),
        softmask=softmask,
        shuffle=shuffle,
        seed=seed,
        block_size=block_size,
        shuffle_blocks=shuffle_blocks,
        num_shards=num_shards,
        split=split,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        split_by=split_by,
        include=include,
        exclude=exclude,
    )
    if block_size < max_tokens * int(tokenizer.k):
        logger.warning(
            "block_size=%d bases is shorter than a full window (%d tokens x %d bases): windows never cross "
            "blocks, so none will be full", block_size, max_tokens, int(tokenizer.k),
        )
    if isinstance(sources, Sequence) and not isinstance(sources, str):
        folders = [s for s in sources if isinstance(s, (str, Path)) and is_shard_dir(s)]
        if folders and len(sources) > 1:
            raise ConfigError(
                f"{folders[0]} is a shard folder (genolm data prepare); it must be the only source, "
                f"got {len(sources)} sources"
            )
        if folders:  # a recipe's `sources: [SHARDS_DIR]`
            sources = folders[0]
    if isinstance(sources, (str, Path)) and is_shard_dir(sources):
        return load_shards(sources, tokenizer, options, stopping_strategy=stopping_strategy)
    entries = as_entries(sources)
    datasets_, weights = [], []
    for entry in entries:
        files = tuple(resolve_source(entry.source, entry.species, ncbi_url=ncbi_url, cache_dir=cache_dir))
        shards = plan_shards(files, entry.species, options)
        if not shards:
            logger.info("%s (%s): no blocks in split %r; skipped", entry.species, entry.source, split)
            continue
        datasets_.append(
            IterableDataset.from_generator(
                _generate_windows,
                gen_kwargs={
                    "shards": shards,
                    "files": files,
                    "species": entry.species,
                    "tokenizer": tokenizer,
                    "options": options,
                },
                features=window_features(options.max_tokens, options.softmask),
            )
        )
        weights.append(entry.weight)
    return mix(datasets_, weights, options, stopping_strategy)


def collate_windows(rows: Sequence[Mapping[str, Any]], return_tensors: str = "np") -> dict[str, Any]:
    """Batch window rows: arrays stacked to (batch, max_tokens + 1), other columns as lists.

    With ``return_tensors="np"`` (default) the batch stays numpy, which a
    :class:`torch.utils.data.DataLoader` worker hands to the main process much faster than tensors
    (``torch.from_numpy`` there is free); ``"pt"`` gives torch tensors.
    """
    if return_tensors not in ("np", "pt"):
        raise ValueError(f"return_tensors must be 'np' or 'pt', not {return_tensors!r}")
    batch: dict[str, Any] = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if isinstance(values[0], np.ndarray):
            stacked = np.stack(values)
            batch[key] = torch_from_numpy(stacked) if return_tensors == "pt" else stacked
        else:
            batch[key] = values
    return batch


def torch_from_numpy(array: np.ndarray):
    import torch

    return torch.from_numpy(array)


def window_features(max_tokens: int, softmask: bool = False):
    """The :class:`datasets.Features` of window rows (for ``ds.cast`` or documentation).

    :func:`genome_dataset` returns datasets without features set: with them, ``datasets`` would convert
    every numpy row to Python lists, which is many times slower than the tokenisation itself.
    """
    from datasets import Features, List, Value

    width = max_tokens + 1
    features = {
        "input_ids": List(Value("int64"), length=width),
        "attention_mask": List(Value("int64"), length=width),
        "species": Value("string"),
        "seq_id": Value("string"),
        "start": Value("int64"),
        "end": Value("int64"),
        "strand": Value("string"),
    }
    if softmask:
        features["softmask"] = List(Value("float32"), length=width)
    return Features(features)


def mix(datasets_: list, weights: list[float], options: WindowOptions, stopping_strategy: str | None = None):
    """Interleave per-genome datasets with probabilities proportional to ``weights``."""
    from datasets import interleave_datasets

    if not datasets_:
        raise GenomeDataError(
            f"no genome has any block in split {options.split!r} (block_size={options.block_size}, "
            f"validation_fraction={options.validation_fraction}, test_fraction={options.test_fraction}); "
            "small genomes need smaller blocks or a larger fraction"
        )
    if len(datasets_) == 1:
        mixed = datasets_[0]
    else:
        if stopping_strategy is None:
            stopping_strategy = "all_exhausted" if options.split in (None, "train") else "all_exhausted_without_replacement"
        total = float(sum(weights))
        mixed = interleave_datasets(
            datasets_,
            probabilities=[w / total for w in weights],
            seed=options.seed,
            stopping_strategy=stopping_strategy,
        )
    # Rows stay numpy arrays (see window_features); the features were only given to skip inference.
    mixed.info.features = None
    return mixed

