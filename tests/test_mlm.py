"""MLM masking statistics (NT/BERT 15 % with 80/10/10), the loss, and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from genolm import GenoLMConfig, GenoLMForMaskedLM
from genolm.training import IGNORE_INDEX, MLMCollator, lr_at, mlm_loss
from genolm.training.schedule import build_scheduler

PAD, MASK, CLS, UNK = 1, 2, 3, 0


def _collator(tokenizer, max_tokens=512, **kwargs) -> MLMCollator:
    return MLMCollator.from_tokenizer(tokenizer, max_tokens, vocab_size=4105, **kwargs)


def _rows(n: int, lengths: list[int], seed: int = 0) -> list[dict]:
    """Windows as genome_dataset gives them: <cls> + k-mer ids, padded, with an attention mask."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = lengths[i % len(lengths)]
        ids = torch.full((512,), PAD)
        ids[0] = CLS
        ids[1:length] = torch.randint(4, 4100, (length - 1,), generator=g)
        mask = torch.zeros(512, dtype=torch.long)
        mask[:length] = 1
        rows.append({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    return rows


def test_from_tokenizer_excludes_specials(tokenizer):
    collator = _collator(tokenizer)
    random_ids = set(collator.random_token_ids)
    assert {UNK, PAD, MASK, CLS}.isdisjoint(random_ids)
    assert max(random_ids) == 4104 and len(random_ids) == 4101  # k-mers + A T C G N, no <eos>/<bos> rows
    assert set(tokenizer.all_special_ids) <= set(collator.special_token_ids)


def test_masking_statistics(tokenizer):
    collator = _collator(tokenizer, seed=1)
    rows = _rows(64, [512, 300, 101])
    original = collator.pad(rows)
    batch = collator(rows)
    ids, labels, attention = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == (64, 512)
    assert torch.equal(attention, original["attention_mask"])

    real = original["attention_mask"].bool() & (original["input_ids"] != CLS)
    selected = labels != IGNORE_INDEX
    # Specials and padding are never selected, and keep their ids.
    assert not selected[~real].any()
    assert torch.equal(ids[~real], original["input_ids"][~real])
    # Labels are the original ids.
    assert torch.equal(labels[selected], original["input_ids"][selected])

    rate = selected.sum().item() / real.sum().item()
    assert abs(rate - 0.15) < 0.01, rate
    n = selected.sum().item()
    masked = (ids[selected] == MASK).sum().item() / n
    changed = ((ids[selected] != MASK) & (ids[selected] != labels[selected])).sum().item() / n
    kept = (ids[selected] == labels[selected]).sum().item() / n
    assert abs(masked - 0.8) < 0.02, masked
    assert abs(changed - 0.1) < 0.015, changed
    assert abs(kept - 0.1) < 0.015, kept
    # Outside the selection nothing changes.
    assert torch.equal(ids[~selected], original["input_ids"][~selected])
    # Random replacements are real tokens, never specials.
    random_ids = ids[selected & (ids != MASK) & (ids != labels)]
    assert random_ids.min() >= 4 and random_ids.max() <= 4104


def test_masking_is_seeded_and_resumable(tokenizer):
    rows = _rows(4, [512])
    a, b = _collator(tokenizer, seed=7), _collator(tokenizer, seed=7)
    assert torch.equal(a(rows)["input_ids"], b(rows)["input_ids"])
    state = a.state_dict()
    expected = a(rows)["input_ids"]
    c = _collator(tokenizer, seed=0)
    c.load_state_dict(state)
    assert torch.equal(c(rows)["input_ids"], expected)
    assert not torch.equal(_collator(tokenizer, seed=8)(rows)["input_ids"], expected)


def test_soft_mask_weights(tokenizer):
    rows = _rows(2, [512])
    for row in rows:
        row["softmask"] = torch.linspace(0, 1, 512).numpy()
    batch = _collator(tokenizer, soft_mask_weight=0.2)(rows)
    assert torch.allclose(batch["loss_weights"][0], 1 - torch.linspace(0, 1, 512) * 0.8)
    assert "loss_weights" not in _collator(tokenizer)(rows)


def test_invalid_probabilities(tokenizer):
    with pytest.raises(ValueError, match="mlm_probability"):
        _collator(tokenizer, mlm_probability=0.0)
    with pytest.raises(ValueError, match="> 1"):
        _collator(tokenizer, mask_replace_prob=0.8, random_replace_prob=0.3)


def test_mlm_loss_sparse_dense_and_weighted(tokenizer):
    torch.manual_seed(0)
    config = GenoLMConfig.from_preset("tiny")
    model = GenoLMForMaskedLM(config).eval()
    batch = _collator(tokenizer, max_tokens=64)([{"input_ids": r["input_ids"][:64]} for r in _rows(3, [512])])
    with torch.no_grad():
        dense = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        sparse = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
            sparse_prediction=True,
        )
    n = (batch["labels"] != IGNORE_INDEX).sum().item()
    assert sparse.logits.shape == (n, config.vocab_size)
    torch.testing.assert_close(sparse.loss, dense.loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mlm_loss(dense.logits, batch["labels"]), dense.loss)
    torch.testing.assert_close(mlm_loss(sparse.logits, batch["labels"], sparse=True), dense.loss, rtol=1e-5, atol=1e-5)

    weights = torch.rand(batch["labels"].shape)
    weighted_dense = mlm_loss(dense.logits, batch["labels"], weights)
    weighted_sparse = mlm_loss(sparse.logits, batch["labels"], weights, sparse=True)
    selected = batch["labels"] != IGNORE_INDEX
    ce = torch.nn.functional.cross_entropy(dense.logits[selected].float(), batch["labels"][selected], reduction="none")
    manual = (ce * weights[selected]).sum() / weights[selected].sum()
    torch.testing.assert_close(weighted_dense, manual, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weighted_sparse, manual, rtol=1e-5, atol=1e-5)


def test_lr_schedule_warmup_and_sqrt_decay():
    kwargs = dict(lr=1e-4, warmup_steps=100, init_lr=5e-5, decay="sqrt")
    assert lr_at(0, **kwargs) == pytest.approx(5e-5)
    assert lr_at(50, **kwargs) == pytest.approx(7.5e-5)
    assert lr_at(100, **kwargs) == pytest.approx(1e-4)
    assert lr_at(400, **kwargs) == pytest.approx(1e-4 * math.sqrt(100 / 400))
    assert lr_at(150, lr=1.0, warmup_steps=100, decay="cosine", max_steps=200) == pytest.approx(0.5)
    assert lr_at(200, lr=1.0, warmup_steps=100, decay="linear", max_steps=200, min_lr=0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="decay"):
        lr_at(0, lr=1.0, warmup_steps=0, decay="step")

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-4)
    scheduler = build_scheduler(optimizer, 1e-4, warmup_steps=100, init_lr=5e-5, decay="sqrt")
    seen = []
    for _ in range(3):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([lr_at(s, **kwargs) for s in range(3)])
