"""Per-process resume state (genolm.training.resume) and the state of a stream read ahead by a prefetching
loader (genolm.parallel.base.PrefetchedStates), without any accelerator."""

from __future__ import annotations

import queue
import random
import threading

import numpy as np
import pytest
import torch

from genolm.parallel.base import PrefetchedStates
from genolm.training import BatchStream, MLMCollator, load_training_state
from genolm.training.resume import process_state, restore_process_state, resume_plan

ROWS, TOKENS, BATCH = 22, 12, 4


def _dataset():
    """A small streaming dataset with a resumable position (two shards, so the position is not just a count)."""
    from datasets import Dataset

    g = np.random.default_rng(0)
    ids = g.integers(5, 4000, size=(ROWS, TOKENS)).astype(np.int32)
    ids[:, 0] = 3  # <cls>
    return Dataset.from_dict({"input_ids": ids.tolist(), "seq_id": [f"row{i}" for i in range(ROWS)]}).to_iterable_dataset(
        num_shards=2
    )


def _stream(tokenizer, shuffle_buffer: int = 6, seed: int = 7, process_index: int = 0, num_processes: int = 1):
    collator = MLMCollator.from_tokenizer(tokenizer, TOKENS, seed=seed + 100)
    return BatchStream(_dataset(), collator, BATCH, shuffle_buffer, seed, process_index, num_processes)


def _take(iterator, n: int) -> list[dict[str, torch.Tensor]]:
    return [next(iterator) for _ in range(n)]


def _assert_same_batches(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def _draws() -> tuple:
    """One draw of each global generator."""
    return random.random(), float(np.random.random()), torch.rand(3).tolist()


def test_process_state_restores_the_stream_and_the_generators_in_a_fresh_process(tokenizer, tmp_path):
    """A stream advanced across an epoch boundary, saved with torch.save and read back weights-only, continues
    in a new stream object with the same batches, and the global generators draw the same numbers."""
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    first = _stream(tokenizer)
    batches = iter(first)
    _take(batches, 6)  # 24 rows through a buffer of 6 over 22 rows a pass: epoch 1 has begun
    _draws()
    assert first.epoch == 1
    torch.save({"processes": [process_state(first)]}, tmp_path / "training_state.pt")
    expected_batches = _take(batches, 5)
    expected_draws = _draws()

    random.seed(2), np.random.seed(2), torch.manual_seed(2)  # another process's generators
    state = load_training_state(tmp_path)["processes"][0]  # weights_only: only tensors, containers, numpy
    second = _stream(tokenizer)
    restore_process_state(state, second)
    _assert_same_batches(_take(iter(second), 5), expected_batches)
    assert _draws() == expected_draws

    # without the restore, the same new stream starts over: the comparison above can fail
    fresh = _take(iter(_stream(tokenizer)), 1)[0]
    assert not torch.equal(fresh["input_ids"], expected_batches[0]["input_ids"])


def _read_ahead(stream: BatchStream, depth: int):
    """A loader that reads ahead on a thread like torch-xla's device loader: a bounded queue filled by a worker
    thread from ``PrefetchedStates.host_batches``; yields batches and reports each one as consumed."""
    states = PrefetchedStates(stream)
    ready: queue.Queue = queue.Queue(maxsize=depth)

    def worker() -> None:
        for batch in states.host_batches():
            ready.put(batch)

    threading.Thread(target=worker, daemon=True).start()

    def batches():
        while True:
            batch = ready.get()
            states.consumed()
            yield batch

    return batches(), ready


def test_prefetched_stream_saves_the_position_of_the_last_consumed_batch(tokenizer):
    """With a reader 6 batches ahead, state_dict() is the position after the batches the consumer took (the
    batches a restored stream yields next are the ones the consumer gets next), not the reader's position."""
    stream = _stream(tokenizer)
    loader, ready = _read_ahead(stream, depth=6)
    consumed = _take(loader, 4)
    while not ready.full():  # the reader is 6 batches ahead (plus the one it holds)
        threading.Event().wait(0.01)
    saved = stream.state_dict()
    coming = _take(loader, 3)

    synchronous = iter(_stream(tokenizer))
    _assert_same_batches(consumed, _take(synchronous, 4))  # prefetching changes no batch
    restored = _stream(tokenizer)
    restored.load_state_dict(saved)
    _assert_same_batches(_take(iter(restored), 3), coming)

    # what was saved before: the live position, read ahead of the consumer
    ahead = _stream(tokenizer)
    ahead.load_state_dict(stream._snapshot())
    assert not torch.equal(next(iter(ahead))["input_ids"], coming[0]["input_ids"])


def test_prefetched_stream_before_any_batch_is_consumed_saves_its_start(tokenizer):
    stream = _stream(tokenizer)
    batches = iter(stream)
    _take(batches, 2)
    start = stream.state_dict()
    expected = _take(batches, 2)

    resumed = _stream(tokenizer)
    resumed.load_state_dict(start)
    loader, ready = _read_ahead(resumed, depth=3)
    while not ready.full():
        threading.Event().wait(0.01)
    again = _stream(tokenizer)
    again.load_state_dict(resumed.state_dict())  # nothing consumed yet: the position it was restored to
    _assert_same_batches(_take(iter(again), 2), expected)
    _assert_same_batches(_take(loader, 2), expected)


def test_resume_plan_same_and_other_number_of_processes():
    assert resume_plan(4, 3, 4) == (3, None)
    index, note = resume_plan(4, 5, 2)
    assert index == 1
    assert note.startswith("warning: the checkpoint was written by 4 process(es), this run has 2: ")
    assert "saved process i mod 4" in note and "beginning of the epoch" in note and "\n" not in note
    assert resume_plan(2, 3, 4)[0] == 1
    with pytest.raises(ValueError, match="no process state"):
        resume_plan(0, 0, 1)


def test_other_number_of_processes_restarts_the_epoch_with_the_saved_generators(tokenizer):
    """Saved by process 1 of 2 in epoch 1; restored (not exactly) by a single process: its stream starts its
    own rows at the beginning of epoch 1, with the saved masking generator, and the global generators continue."""
    saved_stream = _stream(tokenizer, shuffle_buffer=0, process_index=1, num_processes=2)
    batches = iter(saved_stream)
    _take(batches, 4)  # 11 rows a pass, 4 a batch: epoch 1 has begun
    assert saved_stream.epoch == 1
    torch.manual_seed(3)
    state = process_state(saved_stream)
    expected_draws = _draws()

    torch.manual_seed(4)
    single = _stream(tokenizer, shuffle_buffer=0)
    restore_process_state(state, single, exact=False)
    got = next(iter(single))
    assert _draws() == expected_draws

    # reference: the first 4 rows of the whole dataset in epoch 1, masked by the saved collator's generator
    dataset = _dataset()
    dataset.set_epoch(1)
    rows = [{"input_ids": np.asarray(r["input_ids"], dtype=np.int32)} for r in dataset.take(BATCH)]
    collator = MLMCollator.from_tokenizer(tokenizer, TOKENS, seed=0)
    collator.load_state_dict(state["stream"]["collator"])
    expected = collator(rows)
    _assert_same_batches([got], [expected])
    assert single.epoch == 1
