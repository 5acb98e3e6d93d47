"""Masked-language-model batches and loss, as in Nucleotide Transformer / AgroNT pretraining.

NT (Dalla-Torre et al. 2024, Methods) follows BERT: 15 % of the tokens of each sequence are selected; of those,
80 % become ``<mask>``, 10 % a random token and 10 % stay unchanged; the loss is the cross-entropy at the
selected positions only. Special tokens (``<cls>``, ``<pad>``, ...) are never selected, and padding carries
no loss.

Every batch has the same shape, ``(batch_size, max_tokens)``: short windows are right-padded to
``max_tokens``, so a compiled XLA graph is reused for every step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label of positions that carry no loss (transformers' convention)


@dataclass
class MLMCollator:
    """Pad a list of tokenized windows to a fixed length and apply BERT/NT masking.

    Args:
        pad_token_id, mask_token_id: ids of ``<pad>`` and ``<mask>``.
        special_token_ids: ids never selected for prediction (``<cls>``, ``<pad>``, ``<unk>``, ...).
        random_token_ids: ids a selected token may be replaced with in the 10 % "random" case (the k-mers
            and single nucleotides).
        max_tokens: length every batch is padded to (``<cls>`` included).
        mlm_probability: fraction of non-special tokens selected (0.15).
        mask_replace_prob: fraction of selected tokens replaced by ``<mask>`` (0.8).
        random_replace_prob: fraction of selected tokens replaced by a random token (0.1); the rest
            (``1 - mask_replace_prob - random_replace_prob``) keep their id.
        soft_mask_weight: loss weight of tokens from soft-masked (lower-case, repeat) sequence. A row's
            ``softmask`` field (``genome_dataset(..., softmask=True)``) gives, per token, the fraction ``f`` of
            its bases in lower case; the token's weight is ``1 - f * (1 - soft_mask_weight)``. ``1.0``
            (default) weighs every token alike and adds no ``loss_weights`` to the batch.
        seed: seed of the collator's own random generator; its state is part of a checkpoint, so a resumed
            run masks exactly as an uninterrupted one.

    Returns (from ``__call__``) a dict of tensors, each (batch, max_tokens): ``input_ids`` (masked),
    ``attention_mask``, ``labels`` (original id at selected positions, -100 elsewhere) and, with
    ``soft_mask_weight != 1``, ``loss_weights`` (float).
    """

    pad_token_id: int
    mask_token_id: int
    special_token_ids: Sequence[int]
    random_token_ids: Sequence[int]
    max_tokens: int
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    soft_mask_weight: float = 1.0
    seed: int = 0
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.mask_replace_prob < 0 or self.random_replace_prob < 0:
            raise ValueError("mask_replace_prob and random_replace_prob must be >= 0")
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise ValueError(
                f"mask_replace_prob + random_replace_prob = "
                f"{self.mask_replace_prob + self.random_replace_prob} > 1"
            )
        if not 0.0 <= self.soft_mask_weight <= 1.0:
            raise ValueError(f"soft_mask_weight must be in [0, 1], got {self.soft_mask_weight}")
        self.generator = torch.Generator().manual_seed(self.seed)
        self._special = torch.tensor(sorted(set(self.special_token_ids)), dtype=torch.long)
        self._random = torch.tensor(sorted(set(self.random_token_ids)), dtype=torch.long)
        if self._random.numel() == 0:
            raise ValueError("random_token_ids is empty")

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, max_tokens: int, vocab_size: int | None = None, **kwargs: Any) -> MLMCollator:
        """Build from a ``GenoLMTokenizer``: specials are its special tokens, random replacements every other id
        below ``vocab_size`` (the model's embedding rows; NT v1's ``<eos>``/``<bos>`` lie outside it)."""
        vocab_size = vocab_size or len(tokenizer)
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_ids)
        special |= {i for t, i in vocab.items() if t.startswith("<") and t.endswith(">")}
        random_ids = [i for i in range(vocab_size) if i not in special]
        return cls(
            pad_token_id=tokenizer.pad_token_id,
            mask_token_id=tokenizer.mask_token_id,
            special_token_ids=sorted(special),
            random_token_ids=random_ids,
            max_tokens=max_tokens,
            **kwargs,
        )

    # -- generator state (checkpointed) -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    # -- batching ---------------------------------------------------------------------------------
    def pad(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-pad each row to ``max_tokens``; no masking.

        A row's ``attention_mask`` (if given) marks its real tokens, otherwise all its ``input_ids`` are real.
        """
        batch = len(rows)
        input_ids = torch.full((batch, self.max_tokens), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, self.max_tokens), dtype=torch.long)
        soft = torch.zeros((batch, self.max_tokens), dtype=torch.float32)
        for i, row in enumerate(rows):
            ids = np.asarray(row["input_ids"], dtype=np.int64)
            if ids.shape[0] > self.max_tokens:
                raise ValueError(
                    f"window of {ids.shape[0]} tokens is longer than max_tokens={self.max_tokens} "
                    f"(seq_id={row.get('seq_id')!r}, start={row.get('start')})"
                )
            n = ids.shape[0]
            input_ids[i, :n] = torch.from_numpy(ids)
            mask = row.get("attention_mask")
            attention_mask[i, :n] = torch.from_numpy(np.asarray(mask, dtype=np.int64)) if mask is not None else 1
            if row.get("softmask") is not None:
                fraction = np.asarray(row["softmask"], dtype=np.float32)
                soft[i, : fraction.shape[0]] = torch.from_numpy(fraction)
        out = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.soft_mask_weight != 1.0:
            out["softmask"] = soft
        return out

    def mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT/NT masking of (batch, tokens) ids -> (masked ids, labels), using the collator's generator."""
        g = self.generator
        selectable = attention_mask.bool() & ~torch.isin(input_ids, self._special)
        probs = torch.full(input_ids.shape, self.mlm_probability)
        selected = torch.bernoulli(probs, generator=g).bool() & selectable
        labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        # One uniform draw per token splits the selected ones into mask / random / keep.
        u = torch.rand(input_ids.shape, generator=g)
        to_mask = selected & (u < self.mask_replace_prob)
        to_random = selected & (u >= self.mask_replace_prob) & (u < self.mask_replace_prob + self.random_replace_prob)
        random_ids = self._random[torch.randint(len(self._random), input_ids.shape, generator=g)]
        masked = torch.where(to_mask, torch.full_like(input_ids, self.mask_token_id), input_ids)
        masked = torch.where(to_random, random_ids, masked)
        return masked, labels

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.pad(rows)
        batch["input_ids"], batch["labels"] = self.mask(batch["input_ids"], batch["attention_mask"])
        soft = batch.pop("softmask", None)
        if soft is not None:
            batch["loss_weights"] = 1.0 - soft * (1.0 - self.soft_mask_weight)
        return batch


def mlm_loss_weight(labels: torch.Tensor, loss_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The denominator of :func:`mlm_loss`: the number of labelled positions, or the sum of their weights
    (an fp32 scalar). Summed over a step's micro-batches and processes, it makes the step's loss the mean over
    all its labelled tokens (torchtitan's ``train_step``)."""
    selected = labels != IGNORE_INDEX
    if loss_weights is None:
        return selected.sum().float()
    return (loss_weights.float() * selected).sum()


def mlm_loss_sum(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss_weights: torch.Tensor | None = None,
    sparse: bool = False,
) -> torch.Tensor:
    """The numerator of :func:`mlm_loss`: the (weighted) sum of the fp32 cross-entropies at labelled
    positions. Arguments as for :func:`mlm_loss`."""
    selected = labels != IGNORE_INDEX
    if sparse:
        targets = labels[selected]
        weights = loss_weights[selected] if loss_weights is not None else None
    else:
        targets = labels.reshape(-1)
        logits = logits.reshape(-1, logits.shape[-1])
        weights = loss_weights.reshape(-1) * selected.reshape(-1) if loss_weights is not None else None
    ce = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="none")
    return ce.sum() if weights is None else (ce * weights.float()).sum()


def mlm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss_weights: torch.Tensor | None = None,
    sparse: bool = False,
) -> torch.Tensor:
    """Cross-entropy in fp32 over labelled positions, optionally weighted per token.

    Args:
        logits: (batch, tokens, vocab), or (n_labelled, vocab) when the model ran with ``sparse_prediction``
            (rows in the row-major order of ``labels != -100``).
        labels: (batch, tokens), -100 where there is no target.
        loss_weights: (batch, tokens) weights, or None for the plain mean.
        sparse: whether ``logits`` are the sparse (n_labelled, vocab) form.

    Returns:
        A scalar: ``sum(w * ce) / sum(w)`` over labelled positions (the plain mean when unweighted); 0 for a
        batch without labelled positions (the clamp keeps it from being NaN).
    """
    total = mlm_loss_sum(logits, labels, loss_weights, sparse)
    return total / mlm_loss_weight(labels, loss_weights).clamp(min=1e-6)


__all__ = ["IGNORE_INDEX", "MLMCollator", "mlm_loss", "mlm_loss_sum", "mlm_loss_weight"]
