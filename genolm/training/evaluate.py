"""Validation loss / perplexity (overall and per species) and a fill-mask demonstration."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .mlm import IGNORE_INDEX


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Sequence[dict[str, Any]], runtime: Any) -> dict[str, Any]:
    """Masked-LM loss of ``model`` on fixed validation ``batches`` (from ``fixed_batches``).

    The loss is the mean cross-entropy over all masked tokens (fp32), perplexity its exponential. With
    species names in the batches, ``per_species`` maps each species to its own loss.

    Returns:
        ``{"loss", "perplexity", "tokens", "per_species": {name: loss}}`` (``loss`` NaN without batches).
    """
    was_training = model.training
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for batch in batches:
        tensors = runtime.to_device({k: batch[k] for k in ("input_ids", "attention_mask", "labels")})
        with runtime.autocast():
            logits = model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"]).logits
        labels = tensors["labels"]
        token_loss = F.cross_entropy(
            logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
        )  # (batch, tokens)
        row_sum = token_loss.sum(1).cpu()  # host sync: once per validation batch
        row_count = (labels != IGNORE_INDEX).sum(1).cpu()
        for name, loss_sum, count in zip(batch.get("species") or [""] * len(row_sum), row_sum, row_count):
            sums[name] += float(loss_sum)
            counts[name] += int(count)
    model.train(was_training)
    total, n = sum(sums.values()), sum(counts.values())
    loss = total / n if n else math.nan
    per_species = {name: sums[name] / counts[name] for name in sorted(sums) if counts[name] and name}
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if n else math.nan,
        "tokens": n,
        "per_species": per_species,
    }


@torch.no_grad()
def fill_mask_example(
    model: torch.nn.Module,
    tokenizer: Any,
    sequence: str,
    num_masks: int = 4,
    top_k: int = 3,
    device: torch.device | str = "cpu",
) -> str:
    """Mask ``num_masks`` evenly spaced k-mers of ``sequence`` and show the model's top predictions.

    Returns a printable multi-line report: the masked positions, the true k-mer, the top-k predicted k-mers
    with their probabilities, and the fraction predicted correctly.
    """
    encoded = tokenizer(sequence, return_tensors="pt")
    input_ids = encoded["input_ids"].clone()
    n_tokens = input_ids.shape[1] - 1  # without <cls>
    num_masks = max(1, min(num_masks, n_tokens))
    positions = [1 + (i * n_tokens) // num_masks + n_tokens // (2 * num_masks) for i in range(num_masks)]
    truth = input_ids[0, positions].clone()
    input_ids[0, positions] = tokenizer.mask_token_id
    was_training = model.training
    model.eval()
    logits = model(input_ids=input_ids.to(device), attention_mask=encoded["attention_mask"].to(device)).logits
    model.train(was_training)
    probs = logits[0, positions].float().softmax(-1).cpu()
    lines = [f"fill-mask on {len(sequence)} bp ({n_tokens} tokens), {num_masks} masked k-mers:"]
    correct = 0
    for pos, true_id, p in zip(positions, truth.tolist(), probs):
        top = p.topk(top_k)
        predicted = [(tokenizer.convert_ids_to_tokens(int(i)), float(v)) for v, i in zip(top.values, top.indices)]
        correct += int(top.indices[0]) == true_id
        shown = ", ".join(f"{tok} {prob:.2f}" for tok, prob in predicted)
        lines.append(f"  token {pos:4d}: true {tokenizer.convert_ids_to_tokens(true_id)}  predicted {shown}")
    lines.append(f"  top-1 correct: {correct}/{num_masks} (chance with 4,096 6-mers: ~0.0002)")
    return "\n".join(lines)


__all__ = ["evaluate", "fill_mask_example"]
