"""Checkpointable batch streams over a window dataset.

A :class:`BatchStream` turns an iterable of tokenized windows (rows with ``input_ids``) into an endless stream
of fixed-shape MLM batches: it splits the rows between processes, shuffles them in a buffer, starts a new
epoch when the source ends, and collates. Its :meth:`~BatchStream.state_dict` holds everything needed to
continue with exactly the batches an uninterrupted run would have produced: the source's own position
(``state_dict()`` of a ``datasets.IterableDataset``), the epoch, the shuffle buffer and its generator.

A consumer that reads ahead on another thread (a device loader that prefetches) iterates
:meth:`~BatchStream.iter_with_state` instead, which pairs every batch with the stream's state right after it,
and reports each batch it hands on with :meth:`~BatchStream.set_consumed`: :meth:`~BatchStream.state_dict` is
then the position after the last batch consumed, whatever the reader has fetched since.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from .mlm import MLMCollator

ROW_FIELDS = ("input_ids", "attention_mask", "softmask", "species", "seq_id", "start", "end", "strand")


def _compact(row: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the fields training uses, with token arrays as compact int32 / bool numpy arrays."""
    out = {}
    for key in ROW_FIELDS:
        if key in row and row[key] is not None:
            value = row[key]
            if key in ("input_ids", "attention_mask"):
                value = np.asarray(value, dtype=np.int32)
            elif key == "softmask":
                value = np.asarray(value, dtype=np.float32)
            out[key] = value
    return out


class BatchStream:
    """Endless, resumable stream of collated batches.

    Args:
        dataset: a ``datasets.IterableDataset`` (anything with ``__iter__``, ``state_dict`` /
            ``load_state_dict`` and optionally ``set_epoch``) of tokenized windows.
        collator: pads and masks a list of rows (its generator state is checkpointed by the caller).
        batch_size: rows per batch.
        shuffle_buffer: rows held in the shuffle buffer (0: keep the source order).
        seed: seed of the buffer's generator.
        process_index, num_processes: this process's share of the rows (``split_dataset_by_node``).
    """

    def __init__(
        self,
        dataset: Any,
        collator: MLMCollator,
        batch_size: int,
        shuffle_buffer: int = 0,
        seed: int = 0,
        process_index: int = 0,
        num_processes: int = 1,
    ):
        if num_processes > 1:
            from datasets.distributed import split_dataset_by_node

            dataset = split_dataset_by_node(dataset, rank=process_index, world_size=num_processes)
        self.dataset = dataset
        self.collator = collator
        self.batch_size = batch_size
        self.shuffle_buffer = shuffle_buffer
        self.epoch = 0
        self.rng = np.random.default_rng(seed)
        self.buffer: list[dict[str, Any]] = []
        self._source_state: dict[str, Any] | None = None  # position of the source to resume from
        self._rows_in_epoch = 0
        self._lock = threading.Lock()  # the consumed state is set and read on different threads
        self._consumed: dict[str, Any] | None = None  # state after the last consumed batch (read-ahead consumers)

    # -- iteration ----------------------------------------------------------------------------
    def _rows(self) -> Iterator[dict[str, Any]]:
        """Source rows forever, epoch after epoch."""
        while True:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(self.epoch)
            if self._source_state is not None:
                self.dataset.load_state_dict(self._source_state)
                self._source_state = None
            produced = False
            for row in self.dataset:
                produced = True
                self._rows_in_epoch += 1
                yield _compact(row)
            if not produced and self._rows_in_epoch == 0:
                raise ValueError("the training dataset produced no windows (check sources and max_tokens)")
            self.epoch += 1
            self._rows_in_epoch = 0

    def _shuffled(self) -> Iterator[dict[str, Any]]:
        """Rows through a shuffle buffer: fill it, then emit a random row and put the next in its place."""
        for row in self._rows():
            if self.shuffle_buffer <= 1:
                yield row
                continue
            if len(self.buffer) < self.shuffle_buffer:
                self.buffer.append(row)
                continue
            i = int(self.rng.integers(len(self.buffer)))
            out, self.buffer[i] = self.buffer[i], row
            yield out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rows: list[dict[str, Any]] = []
        for row in self._shuffled():
            rows.append(row)
            if len(rows) == self.batch_size:
                yield self.collator(rows)
                rows = []

    def iter_with_state(self) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        """``(batch, state right after it)`` pairs, for a consumer that reads ahead: it passes each batch's state
        to :meth:`set_consumed` when it hands that batch on. Until then :meth:`state_dict` is the position where
        this iteration started."""
        with self._lock:
            self._consumed = self._snapshot()
        for batch in self:
            yield batch, self._snapshot()  # taken on the reading thread, between two batches

    def set_consumed(self, state: dict[str, Any]) -> None:
        """Record the state :meth:`iter_with_state` paired with the batch just consumed."""
        with self._lock:
            self._consumed = state

    # -- state --------------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        """The current position, sharing nothing that the stream changes later (buffer rows are never
        modified, only replaced, so a shallow copy of the buffer list is enough)."""
        source = self._source_state if self._source_state is not None else self.dataset.state_dict()
        return {
            "epoch": self.epoch,
            "rows_in_epoch": self._rows_in_epoch,
            "source": copy.deepcopy(source),
            "buffer": list(self.buffer),
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "collator": self.collator.state_dict(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Position after the last batch consumed: the last one yielded by ``iter(stream)`` (call between
        batches), or the last one passed to :meth:`set_consumed` after :meth:`iter_with_state`."""
        with self._lock:
            state = self._consumed if self._consumed is not None else self._snapshot()
            return {**state, "buffer": list(state["buffer"])}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` (before iterating)."""
        self.epoch = state["epoch"]
        self._rows_in_epoch = state["rows_in_epoch"]
        self._source_state = copy.deepcopy(state["source"])
        self.buffer = copy.deepcopy(state["buffer"])
        self.rng.bit_generator.state = state["rng"]
        self.collator.load_state_dict(state["collator"])
        self._consumed = None

    def restart_epoch(self, epoch: int, generators: Mapping[str, Any] | None = None) -> None:
        """Start this process's share of the rows afresh at the beginning of ``epoch``, with an empty shuffle
        buffer and, when ``generators`` (a :meth:`state_dict`) is given, its shuffle and masking generators:
        where no exact position exists (another split of the rows). Call before iterating."""
        self.epoch = epoch
        self._rows_in_epoch = 0
        self._source_state = None
        self.buffer = []
        self._consumed = None
        if generators is not None:
            self.rng.bit_generator.state = generators["rng"]
            self.collator.load_state_dict(generators["collator"])


def fixed_batches(rows: list[Mapping[str, Any]], collator: MLMCollator, batch_size: int) -> list[dict[str, Any]]:
    """Collate ``rows`` into full batches once (validation: the same masked batches at every evaluation).

    Each batch also carries ``species`` (a list of names, or None) for per-species losses.
    """
    batches = []
    for i in range(0, len(rows) - batch_size + 1, batch_size):
        chunk = [_compact(r) for r in rows[i : i + batch_size]]
        batch: dict[str, Any] = collator(chunk)
        batch["species"] = [str(r.get("species", "")) for r in chunk]
        batches.append(batch)
    return batches


__all__ = ["BatchStream", "fixed_batches"]
