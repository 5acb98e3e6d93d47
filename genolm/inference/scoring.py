"""Shared pieces of genolm's inference commands: loading a checkpoint, batching windows, masked-marginal
log-probabilities, embeddings, and k-mer id arithmetic.

**Masked-marginal score.** For a substitution at base ``p``: take the grid window centred on the token that
holds ``p`` (see :mod:`genolm.inference.genome`), replace that token by ``<mask>``, and read the model's
log-probabilities at the masked position. The score is ``log P(alt token) - log P(ref token)``, where the ref
token is the window's token and the alt token is the same k-mer with the base at ``p`` substituted. Because
the masked input does not depend on which base sits inside the masked token, one forward pass gives the score
of all ``3 k`` substitutions of a k-mer token. A single-nucleotide token (the last ``len % k`` bases of a run
of A/C/G/T, before an ``N`` or at a sequence end) is scored with the single-nucleotide tokens A/C/G/T; an SNV
between A/C/G/T never changes where ``N`` s are, so the tokenisation of the mutated window is the same.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputDataError
from ..hub import local_model_folder, looks_like_hub_id
from ..parallel.devices import resolve_device, resolve_dtype

__all__ = [
    "BASE_DIGITS",
    "KmerTable",
    "check_nucleotide_checkpoint",
    "check_vocabulary",
    "encode_windows",
    "load_model",
    "load_pretrained",
    "masked_log_probs",
    "masked_token_log_probs",
    "mean_embeddings",
    "window_embeddings",
    "resolve_device",
    "resolve_dtype",
]

logger = logging.getLogger("genolm.inference")

# Base -> digit of the k-mer index in the tokenizer's itertools.product("ATCG") order.
BASE_DIGITS = {"A": 0, "T": 1, "C": 2, "G": 3}


def load_model(
    model: str | os.PathLike | torch.nn.Module,
    tokenizer=None,
    task: str = "masked-lm",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    compile: bool = False,
):
    """Load a checkpoint folder (or take a loaded model) for inference, with its tokenizer.

    Args:
        model: checkpoint folder, or an already built model (moved to ``device`` only if ``device`` is given).
        tokenizer: a ``GenoLMTokenizer``; by default the one saved with the checkpoint, or else the one that
            ``config.vocab_layout`` and ``config.k`` describe.
        task: ``"masked-lm"`` (``AutoModelForMaskedLM``) or ``"token-classification"``.
        device: ``"auto"`` (default), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        dtype: ``"auto"`` (float32), ``"float32"``, ``"bfloat16"``, ``"float16"``.
        compile: ``torch.compile`` each transformer layer (:func:`genolm.parallel.compile_layers`); the first
            batches of each new shape pay the compilation.

    Returns:
        ``(model, tokenizer)`` with the model in eval mode.

    Raises:
        InputDataError: the folder is not a genolm or ESM nucleotide k-mer model (naming what it holds), its
            tokenizer and model disagree on the vocabulary, or its weights file is corrupt.
    """
    import genolm  # noqa: F401  (registers the genolm classes with the Auto factories)
    from genolm import GenoLMTokenizer

    if isinstance(model, torch.nn.Module):
        if device is not None:
            model = model.to(resolve_device(device))
        if dtype is not None:
            model = model.to(resolve_dtype(dtype, next(model.parameters()).device))
        source = None
    else:
        from transformers import AutoModelForMaskedLM, AutoModelForTokenClassification

        auto = {"masked-lm": AutoModelForMaskedLM, "token-classification": AutoModelForTokenClassification}[
            task
        ]
        source = os.fspath(model)
        if not os.path.isdir(source):
            if not (looks_like_hub_id(source) and not os.path.exists(source)):
                raise InputDataError(f"{source}: checkpoint folder not found")
            source = os.fspath(local_model_folder(source))
        _check_architecture(source, task)
        check_nucleotide_checkpoint(source)
        target = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, target)
        model = load_pretrained(auto, source, dtype=torch_dtype).to(target)
        logger.info("loaded %s from %s on %s in %s", type(model).__name__, source, target, torch_dtype)
    model.eval()
    if tokenizer is None:
        config = model.config
        if source is not None and os.path.exists(os.path.join(source, "tokenizer_config.json")):
            try:
                tokenizer = GenoLMTokenizer.from_pretrained(source)
            except ValueError as err:
                raise InputDataError(f"{source}: the tokenizer is not a nucleotide k-mer vocabulary: {err}") from None
        else:
            tokenizer = GenoLMTokenizer(
                vocab_layout=getattr(config, "vocab_layout", "nt-v1"), k=getattr(config, "k", 6)
            )
    k_model = getattr(model.config, "k", tokenizer.k)
    if k_model != tokenizer.k:
        raise InputDataError(f"the model was trained on {k_model}-mers but the tokenizer cuts {tokenizer.k}-mers")
    check_vocabulary(model, tokenizer, source)
    if compile:
        from ..parallel import compile_layers

        compile_layers(model)
    return model, tokenizer


def load_pretrained(model_class, source: str | os.PathLike, **kwargs):
    """``model_class.from_pretrained(source, **kwargs)``, reporting missing or corrupt weights by their path."""
    from safetensors import SafetensorError

    folder = Path(source)
    weights = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")
    if folder.is_dir() and not any(next(folder.glob(pattern), None) for pattern in weights):
        raise InputDataError(
            f"{folder}: no weights file (model.safetensors) in the checkpoint folder; was it saved completely?"
        )
    try:
        return model_class.from_pretrained(source, **kwargs)
    except SafetensorError as err:
        files = sorted(str(p) for p in Path(source).glob("*.safetensors"))
        raise InputDataError(
            f"{', '.join(files) or source}: cannot read the weights (corrupt or truncated safetensors file): {err}"
        ) from None


def _describe_tokenizer(source: str) -> str:
    """A few words on the tokenizer saved in ``source``: "a 30522-token WordPiece vocabulary"."""
    import json

    kind, size = None, None
    tokenizer_json = os.path.join(source, "tokenizer.json")
    if os.path.exists(tokenizer_json):
        with open(tokenizer_json) as handle:
            backend = json.load(handle).get("model", {})
        kind, size = backend.get("type"), len(backend.get("vocab") or ())
    vocab_txt = os.path.join(source, "vocab.txt")
    if os.path.exists(vocab_txt):
        with open(vocab_txt, encoding="utf-8") as handle:
            size = max(size or 0, sum(1 for line in handle if line.strip()))
    config_file = os.path.join(source, "tokenizer_config.json")
    if not kind and os.path.exists(config_file):
        with open(config_file) as handle:
            kind = json.load(handle).get("tokenizer_class")
    if not size:
        return "no tokenizer"
    return f"a {size}-token {kind or 'unknown'} vocabulary"


NUCLEOTIDE_MODEL_TYPES = ("genolm", "esm")


def check_nucleotide_checkpoint(source: str | os.PathLike) -> None:
    """Refuse a checkpoint folder that is not a genolm or ESM (Nucleotide Transformer) model, naming what it is.

    Raises:
        InputDataError: e.g. "model type 'bert' with a 30522-token WordPiece vocabulary is not a nucleotide
            k-mer model".
    """
    import json

    source = os.fspath(source)
    with open(os.path.join(source, "config.json")) as handle:
        try:
            model_type = json.load(handle).get("model_type")
        except json.JSONDecodeError as err:
            raise InputDataError(f"{source}/config.json: not valid JSON: {err}") from None
    if model_type not in NUCLEOTIDE_MODEL_TYPES:
        raise InputDataError(
            f"{source}: model type {model_type!r} with {_describe_tokenizer(source)} is not a nucleotide k-mer "
            f"model; this command needs a genolm or Nucleotide Transformer (ESM) checkpoint"
        )


def check_vocabulary(model, tokenizer, source: str | os.PathLike | None = None) -> None:
    """Refuse a tokenizer whose token ids do not fit the model's vocabulary, or a model with more tokens than
    the tokenizer knows (the two were saved from different vocabularies).

    The model may leave out the tokenizer's trailing ``<eos>``/``<bos>`` (NT v1 / AgroNT: 4105 of 4107 tokens).
    """
    model_size = getattr(model.config, "vocab_size", None)
    if model_size is None:
        return
    used = [*tokenizer.kmer_ids, *tokenizer.nucleotide_ids.values()]
    used += [tokenizer.cls_token_id, tokenizer.mask_token_id, tokenizer.pad_token_id]
    needed = max(int(i) for i in used) + 1
    if not needed <= int(model_size) <= len(tokenizer):
        where = f"{source}: " if source is not None else ""
        raise InputDataError(
            f"{where}the model has a {model_size}-token vocabulary but the tokenizer has {len(tokenizer)} tokens "
            f"(ids up to {needed - 1}); they come from different checkpoints"
        )


def _check_architecture(source: str, task: str) -> None:
    """Refuse a checkpoint saved with another head: transformers would attach a random one without failing."""
    import json

    config_file = os.path.join(source, "config.json")
    if not os.path.exists(config_file):
        raise InputDataError(f"{source}: no config.json (is this a Hugging Face checkpoint folder?)")
    with open(config_file) as handle:
        architectures = json.load(handle).get("architectures") or []
    wanted = {"masked-lm": "ForMaskedLM", "token-classification": "ForTokenClassification"}[task]
    if architectures and not any(name.endswith(wanted) for name in architectures):
        raise InputDataError(
            f"{source} holds a {', '.join(architectures)} checkpoint; this command needs a *{wanted} model"
        )


def max_window_tokens(model) -> int:
    """The most sequence tokens (``<cls>`` excluded) the model's position scheme takes."""
    config = model.config
    if hasattr(config, "max_tokens"):
        return int(config.max_tokens) - 1
    return (
        int(getattr(config, "max_position_embeddings", 1026))
        - int(getattr(config, "pad_token_id", 1) or 0)
        - 2
    )


class KmerTable:
    """Token-id arithmetic of a k-mer tokenizer: token lengths, k-mer ids of substituted k-mers.

    Args:
        tokenizer: a ``GenoLMTokenizer`` (``kmer_ids``, ``nucleotide_ids``, ``k``).
    """

    def __init__(self, tokenizer):
        self.k = int(tokenizer.k)
        self.kmer_ids = np.asarray(tokenizer.kmer_ids, dtype=np.int64)
        size = max(len(tokenizer), int(self.kmer_ids.max()) + 1)
        self.lengths = np.ones(size, dtype=np.int64)
        self.lengths[self.kmer_ids] = self.k
        self.nucleotide_ids = {b: int(i) for b, i in tokenizer.nucleotide_ids.items()}
        self.cls_id = int(tokenizer.cls_token_id)
        self.mask_id = int(tokenizer.mask_token_id)
        self.pad_id = int(tokenizer.pad_token_id)
        self.place = 4 ** np.arange(self.k - 1, -1, -1, dtype=np.int64)  # weight of each k-mer position

    def kmer_index(self, kmer: str) -> int:
        """Index of an upper-case A/C/G/T k-mer in ``itertools.product("ATCG")`` order."""
        return int(sum(BASE_DIGITS[b] * int(w) for b, w in zip(kmer, self.place)))

    def substitution_ids(self, token: str, offset: int, alt: str) -> tuple[int, int]:
        """``(ref_id, alt_id)`` of ``token`` (a k-mer or one base, upper case) with base ``offset`` -> ``alt``."""
        if len(token) == 1:
            return self.nucleotide_ids[token], self.nucleotide_ids[alt]
        mutated = token[:offset] + alt + token[offset + 1 :]
        return int(self.kmer_ids[self.kmer_index(token)]), int(self.kmer_ids[self.kmer_index(mutated)])

    def all_substitutions(self, token: str) -> np.ndarray:
        """Ids of every single-base variant of ``token``: int64 array (len(token), 4), columns A, C, G, T
        (the reference base's column holds the reference id)."""
        columns = "ACGT"
        if len(token) == 1:
            return np.array([[self.nucleotide_ids[b] for b in columns]], dtype=np.int64)
        index = self.kmer_index(token)
        digits = np.array([BASE_DIGITS[b] for b in token], dtype=np.int64)
        new_digits = np.array([BASE_DIGITS[b] for b in columns], dtype=np.int64)
        mutated = index + (new_digits[None, :] - digits[:, None]) * self.place[:, None]
        return self.kmer_ids[mutated]


@dataclass
class EncodedBatch:
    """Padded token ids of a batch of windows: ``input_ids``/``attention_mask`` (batch, tokens), ``<cls>``
    first."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def encode_windows(windows: list[np.ndarray], table: KmerTable, device: torch.device) -> EncodedBatch:
    """Prepend ``<cls>`` to each window's ids (``encode_genome`` output) and right-pad to a batch."""
    longest = max(len(w) for w in windows) + 1
    ids = np.full((len(windows), longest), table.pad_id, dtype=np.int64)
    mask = np.zeros((len(windows), longest), dtype=np.int64)
    for row, window in enumerate(windows):
        ids[row, 0] = table.cls_id
        ids[row, 1 : len(window) + 1] = window
        mask[row, : len(window) + 1] = 1
    return EncodedBatch(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))


@torch.inference_mode()
def masked_log_probs(model, batch: EncodedBatch, positions: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Log-probabilities over the vocabulary at one masked position per window.

    Args:
        model: a masked LM (genolm or transformers' ESM).
        batch: ids (batch, tokens) with ``<cls>`` at 0.
        positions: (batch,) index of the token to mask in each row (``<cls>`` counted).
        mask_id: id of ``<mask>``.

    Returns:
        float32 (batch, vocab): ``log_softmax`` of the logits at the masked positions. The LM head runs only on
        the masked positions (it dominates the cost of small models on long windows).
    """
    rows = torch.arange(batch.input_ids.shape[0], device=batch.input_ids.device)
    positions = positions.to(batch.input_ids.device)
    input_ids = batch.input_ids.clone()
    input_ids[rows, positions] = mask_id
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    head = getattr(model, "lm_head", None)
    if base is not None and head is not None:
        hidden = base(input_ids, attention_mask=batch.attention_mask).last_hidden_state
        logits = head(hidden[rows, positions])
    else:
        logits = model(input_ids, attention_mask=batch.attention_mask).logits[rows, positions]
    return F.log_softmax(logits.float(), dim=-1)


@torch.inference_mode()
def mean_embeddings(model, batch: EncodedBatch) -> torch.Tensor:
    """Mean of the final hidden states over each window's sequence tokens (``<cls>`` and padding left out):
    float32 (batch, hidden)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    hidden = base(batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state.float()
    weights = batch.attention_mask.to(hidden.dtype).clone()
    weights[:, 0] = 0
    return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)


def masked_token_log_probs(
    model,
    windows: list[np.ndarray],
    positions: list[int],
    table: KmerTable,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """``log P(token | window with that token masked)`` for each ``(window, position)`` pair: one masked forward
    pass per pair, batched, windows of similar length together.

    Args:
        windows: token ids of each window (``encode_genome`` output, no ``<cls>``); the same array may appear
            several times.
        positions: index of the token to mask in each window (``<cls>`` not counted).
        table, batch_size, device: as for :func:`encode_windows`.

    Returns:
        float64 array, one log-probability per pair, in input order.
    """
    out = np.zeros(len(windows), dtype=np.float64)
    order = sorted(range(len(windows)), key=lambda j: len(windows[j]))  # less padding per batch
    for begin in range(0, len(order), batch_size):
        rows = order[begin : begin + batch_size]
        encoded = encode_windows([windows[j] for j in rows], table, device)
        at = torch.tensor([positions[j] + 1 for j in rows])  # + 1 for <cls>
        targets = encoded.input_ids[torch.arange(len(rows), device=encoded.input_ids.device), at.to(device)]
        log_probs = masked_log_probs(model, encoded, at, table.mask_id)
        picked = log_probs.gather(1, targets[:, None]).squeeze(1).cpu().numpy()
        out[rows] = picked
    return out


def window_embeddings(
    model, windows: list[np.ndarray], table: KmerTable, batch_size: int, device: torch.device
) -> np.ndarray:
    """:func:`mean_embeddings` of unmasked windows of any lengths, batched: float32 (windows, hidden)."""
    rows = []
    for begin in range(0, len(windows), batch_size):
        encoded = encode_windows(windows[begin : begin + batch_size], table, device)
        rows.append(mean_embeddings(model, encoded).cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)
