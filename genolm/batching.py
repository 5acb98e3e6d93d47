"""Length-bucketed batching: batches of inputs of similar length, so that padding to the longest input of a
batch costs little (the fine-tuning loaders and ``genolm embed``).

Training batches follow ``transformers``' ``LengthGroupedSampler``: a random permutation is cut into groups of
``bucket_batches`` batches, each group is sorted by length and cut into batches, and the batches are shuffled,
so every pass sees the inputs in a new random order and batch composition, with little padding. Evaluation and
inference batches take the inputs sorted by length; callers put the outputs back in input order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

BUCKET_BATCHES = 50  # batches per sorted group when shuffling (transformers' LengthGroupedSampler: 50)


def length_bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    bucket_batches: int = BUCKET_BATCHES,
) -> list[list[int]]:
    """Indices of ``lengths`` cut into batches of ``batch_size`` that group similar lengths.

    Without ``shuffle``: the indices sorted by decreasing length (ties in input order), in consecutive
    batches. With ``shuffle``: a permutation drawn from ``generator``, sorted within groups of
    ``bucket_batches * batch_size`` indices, cut into batches whose order is shuffled too. Every index appears
    once; ``drop_last`` leaves out the one incomplete batch (at most one is made).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected at least 1")
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    if not shuffle:
        groups = [np.argsort(-lengths, kind="stable")]
    else:
        order = torch.randperm(n, generator=generator).numpy()
        group = bucket_batches * batch_size
        groups = [chunk[np.argsort(-lengths[chunk], kind="stable")] for chunk in np.split(order, range(group, n, group))]
    batches = [g[i : i + batch_size].tolist() for g in groups for i in range(0, len(g), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


class LengthBucketBatchSampler(torch.utils.data.Sampler):
    """A ``DataLoader`` ``batch_sampler`` of :func:`length_bucketed_batches`; with ``shuffle`` every pass
    draws new batches from ``generator``.

    ``num_replicas`` processes that each take every ``num_replicas``-th batch (Accelerate's batch sharding):
    the global batches of ``batch_size * num_replicas`` are bucketed, then each is cut into ``num_replicas``
    consecutive batches, so the processes of a step together see the batch one process would see."""

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        num_replicas: int = 1,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last
        self.num_replicas = num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        size = self.batch_size
        for batch in length_bucketed_batches(
            self.lengths,
            size * self.num_replicas,
            shuffle=self.shuffle,
            generator=self.generator,
            drop_last=self.drop_last,
        ):
            yield from (batch[i : i + size] for i in range(0, len(batch), size))

    def __len__(self) -> int:
        n, size = len(self.lengths), self.batch_size * self.num_replicas
        if self.drop_last:
            return n // size * self.num_replicas
        full, rest = divmod(n, size)
        return full * self.num_replicas + -(-rest // self.batch_size)


def padded_tokens(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """Token positions computed when each batch is padded to its longest input."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return int(sum(len(b) * lengths[list(b)].max() for b in batches if len(b)))


def padding_saving(lengths: Sequence[int], batch_size: int, seed: int = 0) -> dict[str, float]:
    """Padding of shuffled batches of ``batch_size`` with and without length bucketing (one pass each, the
    same ``seed``): the real tokens, the computed positions of both, and the fraction of the plain batches'
    positions that bucketing saves."""
    n = len(lengths)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    plain = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    bucketed = length_bucketed_batches(
        lengths, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    plain_tokens, bucketed_tokens = padded_tokens(lengths, plain), padded_tokens(lengths, bucketed)
    return {
        "real_tokens": int(np.sum(lengths)),
        "padded_tokens_plain": plain_tokens,
        "padded_tokens_bucketed": bucketed_tokens,
        "saving": 1.0 - bucketed_tokens / plain_tokens if plain_tokens else 0.0,
    }


__all__ = ["LengthBucketBatchSampler", "length_bucketed_batches", "padded_tokens", "padding_saving"]
