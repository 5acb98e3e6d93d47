"""Length-bucketed batching (genolm.batching) and its use by the runtime's data loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genolm.batching import LengthBucketBatchSampler, length_bucketed_batches, padded_tokens, padding_saving


def _lengths(n: int = 523, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 200, size=n)


def test_sorted_batches_cover_every_index_once_longest_first():
    lengths = _lengths()
    batches = length_bucketed_batches(lengths, 16)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [len(b) for b in batches] == [16] * 32 + [11]
    assert list(lengths[flat]) == sorted(lengths, reverse=True)


def test_shuffled_batches_are_new_each_pass_and_group_similar_lengths():
    lengths = _lengths()
    generator = torch.Generator().manual_seed(1)
    first = length_bucketed_batches(lengths, 16, shuffle=True, generator=generator)
    second = length_bucketed_batches(lengths, 16, shuffle=True, generator=generator)
    for batches in (first, second):
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert sum(len(b) < 16 for b in batches) == 1  # only the last group's remainder is incomplete
    assert first != second
    # Within a batch the lengths span far less than across the data (random batches span nearly all of it).
    spread = np.mean([np.ptp(lengths[b]) for b in first if len(b) > 1])
    assert spread < 0.2 * np.ptp(lengths)
    assert length_bucketed_batches(lengths, 16, shuffle=True, generator=torch.Generator().manual_seed(1)) == first


def test_drop_last_leaves_out_only_the_incomplete_batch():
    batches = length_bucketed_batches(_lengths(), 16, shuffle=True, drop_last=True,
                                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert len(batches) == 32 and all(len(b) == 16 for b in batches)


def test_padded_tokens_and_saving_against_a_direct_count():
    lengths = [3, 10, 4, 9]
    assert padded_tokens(lengths, [[0, 1], [2, 3]]) == 2 * 10 + 2 * 9
    assert padded_tokens(lengths, length_bucketed_batches(lengths, 2)) == 2 * 10 + 2 * 4
    saving = padding_saving(_lengths(), 16)
    assert saving["real_tokens"] == int(_lengths().sum())
    assert saving["real_tokens"] <= saving["padded_tokens_bucketed"] < saving["padded_tokens_plain"]
    assert saving["saving"] == pytest.approx(1 - saving["padded_tokens_bucketed"] / saving["padded_tokens_plain"])


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_sampler_for_several_processes_splits_each_global_batch(replicas):
    """Process r takes batches r, r + replicas, ...: together, one step's batches are one bucketed global
    batch, the one a single process with ``batch_size * replicas`` would get."""
    lengths = _lengths(101)
    sampler = LengthBucketBatchSampler(lengths, 4, shuffle=True, generator=torch.Generator().manual_seed(3),
                                       num_replicas=replicas)  # fmt: skip
    batches = list(sampler)
    assert len(batches) == len(sampler)
    single = length_bucketed_batches(lengths, 4 * replicas, shuffle=True, generator=torch.Generator().manual_seed(3))
    steps = [sum(batches[s : s + replicas], []) for s in range(0, len(batches), replicas)]
    assert steps == single
    dropped = LengthBucketBatchSampler(lengths, 4, drop_last=True, num_replicas=replicas)
    assert len(list(dropped)) == len(dropped) == 101 // (4 * replicas) * replicas


def test_runtime_loader_buckets_and_evaluation_outputs_match_unbucketed(tokenizer):
    """The fine-tuning evaluation on a length-bucketed loader gives the logits of a plain loader (outputs are
    placed by window index), with less padding."""
    from genolm import GenoLMConfig, GenoLMForSequenceClassification
    from genolm.finetune import Collator, EncodedDataset, EncodedSplit, predict
    from genolm.parallel import setup

    rng = np.random.default_rng(0)
    n = 23
    ids = [np.concatenate([[tokenizer.cls_token_id], rng.integers(5, 4000, size=int(k))]) for k in rng.integers(3, 60, n)]
    labels = np.asarray(rng.integers(0, 2, n), dtype=np.int64)
    split = EncodedSplit(input_ids=ids, record=np.arange(n), labels=labels, record_ids=[str(i) for i in range(n)],
                         record_labels=labels, record_lengths=np.asarray([6 * len(x) for x in ids]))  # fmt: skip
    torch.manual_seed(0)
    model = GenoLMForSequenceClassification(GenoLMConfig.from_preset("tiny", num_labels=2, pooling="mean")).eval()
    rt = setup("none", mixed_precision="no")
    collator = Collator(tokenizer.pad_token_id)
    lengths = [len(x) for x in ids]
    loaders = {
        bucketed: rt.data_loader(EncodedDataset(split, with_window=True), 4, collator,
                                 lengths=lengths if bucketed else None)  # fmt: skip
        for bucketed in (True, False)
    }
    positions = {k: sum(b["input_ids"].numel() for b in loader) for k, loader in loaders.items()}
    assert positions[True] < positions[False]
    outputs = {k: predict(model, loader, split, "classification", rt) for k, loader in loaders.items()}
    np.testing.assert_allclose(outputs[True].logits, outputs[False].logits, atol=1e-5)
    assert outputs[True].loss == pytest.approx(outputs[False].loss, rel=1e-5)
