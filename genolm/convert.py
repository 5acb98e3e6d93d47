"""Conversion between genolm checkpoints and transformers' ESM format (the format of the published Nucleotide
Transformer v1 and AgroNT weights), plus the NT-v2 Hub layout (ESM key names, SwiGLU feed-forward).

Weights are renamed, never recomputed: the one place that knows both naming schemes is
:func:`esm_key_to_genolm`. A conversion is saved only after the converted model reproduces the source
model's logits on real sequence (the bundled chloroplast genome).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .configuration_genolm import GenoLMConfig
from .errors import InputDataError
from .modeling_genolm import (
    GenoLMForMaskedLM,
    GenoLMForSequenceClassification,
    GenoLMForTokenClassification,
    GenoLMModel,
    GenoLMPreTrainedModel,
)
from .outputs import atomic_folder, check_outputs
from .tokenization_genolm import GenoLMTokenizer, fit_model_max_length

logger = logging.getLogger(__name__)

# Largest logit difference accepted between a source model and its conversion (fp32).
LOGITS_TOLERANCE = 1e-4

# ESM name (after the optional "esm." prefix) -> genolm name (after the optional "genolm." prefix).
_LAYER_RENAMES = [
    (r"attention\.self\.(query|key|value)\.", r"attention.\1."),
    (r"attention\.output\.dense\.", "attention.output."),
    (r"attention\.LayerNorm\.", "attention_norm."),
    (r"intermediate\.dense\.", "ffn.up."),
    (r"output\.dense\.", "ffn.down."),
    (r"LayerNorm\.", "ffn_norm."),
]
_LAYER_RENAMES_INVERSE = [
    ("attention.query.", "attention.self.query."),
    ("attention.key.", "attention.self.key."),
    ("attention.value.", "attention.self.value."),
    ("attention.output.", "attention.output.dense."),
    ("attention_norm.", "attention.LayerNorm."),
    ("ffn.up.", "intermediate.dense."),
    ("ffn.down.", "output.dense."),
    ("ffn_norm.", "LayerNorm."),
]
# Keys with no genolm counterpart: ESM's protein contact head, its pooler, rotary tables (recomputed).
_DROPPED = re.compile(r"(^|\.)(contact_head|pooler)\.|rotary_embeddings\.inv_freq$|position_ids$")

_HEADS = {
    "EsmForMaskedLM": GenoLMForMaskedLM,
    "EsmForSequenceClassification": GenoLMForSequenceClassification,
    "EsmForTokenClassification": GenoLMForTokenClassification,
    "EsmModel": GenoLMModel,
}


def esm_key_to_genolm(key: str) -> str | None:
    """Map one ESM state-dict key to genolm's name, or ``None`` for keys genolm does not keep."""
    if _DROPPED.search(key):
        return None
    # transformers may store LayerNorm parameters under the legacy gamma/beta names.
    key = re.sub(r"\.gamma$", ".weight", key)
    key = re.sub(r"\.beta$", ".bias", key)
    headed = key.startswith("esm.")
    body = key[4:] if headed else key
    if body.startswith("encoder.layer."):
        layer, rest = re.match(r"encoder\.layer\.(\d+)\.(.*)", body).groups()
        for pattern, replacement in _LAYER_RENAMES:
            new_rest, count = re.subn("^" + pattern, replacement, rest)
            if count:
                rest = new_rest
                break
        else:
            raise InputDataError(f"unexpected ESM layer parameter {key!r}")
        body = f"encoder.layers.{layer}.{rest}"
    elif body.startswith("encoder.emb_layer_norm_after."):
        body = body.replace("encoder.emb_layer_norm_after.", "encoder.final_norm.")
    elif not body.startswith(("embeddings.", "lm_head.", "classifier.")):
        raise InputDataError(f"unexpected ESM parameter {key!r}")
    return f"genolm.{body}" if headed else body


def genolm_key_to_esm(key: str) -> str:
    """Inverse of :func:`esm_key_to_genolm`."""
    headed = key.startswith("genolm.")
    body = key[len("genolm.") :] if headed else key
    layer_match = re.match(r"encoder\.layers\.(\d+)\.(.*)", body)
    if layer_match:
        layer, rest = layer_match.groups()
        for genolm_prefix, esm_prefix in _LAYER_RENAMES_INVERSE:
            if rest.startswith(genolm_prefix):
                rest = esm_prefix + rest[len(genolm_prefix) :]
                break
        body = f"encoder.layer.{layer}.{rest}"
    elif body.startswith("encoder.final_norm."):
        body = body.replace("encoder.final_norm.", "encoder.emb_layer_norm_after.")
    return f"esm.{body}" if headed else body


def _load_torch_file(file: Path) -> dict[str, torch.Tensor]:
    return torch.load(file, map_location="cpu", weights_only=True)


def _safetensors_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(file, framework="pt") as weights:  # reads the header only
        return {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}  # noqa: SIM118


def _torch_file_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in _load_torch_file(file).items()}


def weight_files(checkpoint_dir: str | Path) -> tuple[list[Path], str]:
    """The weight files of a checkpoint folder and their format (``"safetensors"`` or ``"torch"``).

    Raises :class:`InputDataError` for a folder without weights or with an unreadable shard index.
    """
    checkpoint_dir = Path(checkpoint_dir)
    for index_name, kind in (("model.safetensors.index.json", "safetensors"), ("pytorch_model.bin.index.json", "torch")):
        index = checkpoint_dir / index_name
        if index.exists():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as err:
                raise InputDataError(f"{index}: not a shard index with a 'weight_map' ({err})") from None
            return [checkpoint_dir / shard for shard in shards], kind
    for name, kind in (("model.safetensors", "safetensors"), ("pytorch_model.bin", "torch")):
        if (checkpoint_dir / name).exists():
            return [checkpoint_dir / name], kind
    raise InputDataError(f"{checkpoint_dir}: no weights (model.safetensors or pytorch_model.bin) in this folder")


def _read_weights(checkpoint_dir: str | Path, read: Mapping[str, Callable[[Path], dict[str, Any]]]) -> dict[str, Any]:
    files, kind = weight_files(checkpoint_dir)
    state: dict[str, Any] = {}
    for file in files:
        if not file.exists():
            raise InputDataError(f"{file}: weight file listed in the shard index is missing")
        try:
            state.update(read[kind](file))
        except SafetensorError as err:
            raise InputDataError(f"{file}: not a readable safetensors file ({err})") from None
        except (pickle.UnpicklingError, EOFError, RuntimeError) as err:
            if kind != "torch":
                raise
            reason = " ".join(str(err).split())[:200]
            raise InputDataError(f"{file}: not a readable PyTorch weights file ({reason})") from None
    return state


def load_state_dict(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint folder's weights: safetensors (also sharded), else a ``.bin`` with
    ``torch.load(weights_only=True)``. A folder without weights or a corrupt file is an :class:`InputDataError`."""
    return _read_weights(checkpoint_dir, {"safetensors": load_file, "torch": _load_torch_file})


def weight_shapes(checkpoint_dir: str | Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight of a checkpoint folder (safetensors: from the headers, no tensor read)."""
    return _read_weights(checkpoint_dir, {"safetensors": _safetensors_shapes, "torch": _torch_file_shapes})


def check_weight_shapes(source: str | Path, expected: Mapping[str, Any], found: Mapping[str, Sequence[int]]) -> None:
    """Raise :class:`InputDataError` naming ``source`` when a weight's shape differs from what its
    ``config.json`` implies (e.g. a ``vocab_size`` that does not match the embedding table).

    ``expected``: name -> tensor or shape (a model's ``state_dict()``); ``found``: name -> shape.
    """
    for key, shape in found.items():
        if key not in expected:
            continue
        wanted = getattr(expected[key], "shape", expected[key])  # a tensor or a shape
        if tuple(wanted) != tuple(shape):
            raise InputDataError(
                f"{source}: weight {key} has shape {list(shape)} but config.json implies {list(wanted)} "
                "(check vocab_size, hidden_size, intermediate_size, max_position_embeddings)"
            )


def read_config_json(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder as a dict; :class:`InputDataError` if absent or not JSON."""
    config_file = Path(checkpoint_dir) / "config.json"
    if not config_file.is_file():
        raise InputDataError(f"{checkpoint_dir}: no config.json (is this a Hugging Face checkpoint folder?)")
    try:
        raw = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputDataError(f"{config_file}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise InputDataError(f"{config_file}: expected a JSON object of model settings")
    return raw


def genolm_config_from_esm(esm_config: dict, state_dict: dict[str, torch.Tensor] | None = None) -> GenoLMConfig:
    """Translate an ESM ``config.json`` (as a dict) to :class:`GenoLMConfig`.

    NT-v2 Hub checkpoints are ESM configs with ``add_bias_fnn: false``: their feed-forward is SwiGLU with an
    up-projection of ``2 * intermediate_size`` rows, which the weights confirm.
    """
    intermediate = esm_config.get("intermediate_size", 3072)
    swiglu = esm_config.get("add_bias_fnn", True) is False
    if state_dict is not None:
        up = next((v for k, v in state_dict.items() if k.endswith("layer.0.intermediate.dense.weight")), None)
        if up is not None and up.shape[0] == 2 * intermediate:
            swiglu = True
    vocab_size = esm_config["vocab_size"]
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=esm_config["hidden_size"],
        num_hidden_layers=esm_config["num_hidden_layers"],
        num_attention_heads=esm_config["num_attention_heads"],
        intermediate_size=intermediate,
        max_position_embeddings=esm_config.get("max_position_embeddings", 1026),
        position_embedding_type=esm_config.get("position_embedding_type", "absolute"),
        rope_theta=esm_config.get("rope_theta", 10000.0),
        ffn_type="swiglu" if swiglu else "gelu",
        ffn_bias=not swiglu,
        hidden_dropout_prob=esm_config.get("hidden_dropout_prob", 0.0) or 0.0,
        attention_probs_dropout_prob=esm_config.get("attention_probs_dropout_prob", 0.0) or 0.0,
        layer_norm_eps=esm_config.get("layer_norm_eps", 1e-12),
        initializer_range=esm_config.get("initializer_range", 0.02),
        token_dropout=bool(esm_config.get("token_dropout", False)),
        emb_layer_norm_before=bool(esm_config.get("emb_layer_norm_before", False)),
        mask_token_id=esm_config.get("mask_token_id", 2),
        pad_token_id=esm_config.get("pad_token_id", 1),
        vocab_layout="nt-v2" if swiglu else "nt-v1",
    )
    for passthrough in ("id2label", "label2id", "problem_type"):
        if esm_config.get(passthrough) is not None:
            fields[passthrough] = esm_config[passthrough]
    return GenoLMConfig(**fields)


def esm_config_from_genolm(config: GenoLMConfig):
    """Translate a :class:`GenoLMConfig` to ``transformers.EsmConfig``; refuses what ESM cannot express."""
    from transformers import EsmConfig

    if config.ffn_type != "gelu" or not config.ffn_bias:
        raise InputDataError(
            f"ESM cannot express this architecture (ffn_type={config.ffn_type!r}, ffn_bias={config.ffn_bias}): "
            "transformers' EsmModel has a GELU feed-forward with biases only. NT-v2-style models "
            "(rotary + SwiGLU) stay in genolm format."
        )
    extra = {}
    if getattr(config, "problem_type", None):
        extra["problem_type"] = config.problem_type
    return EsmConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        position_embedding_type=config.position_embedding_type,
        rope_theta=config.rope_theta,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        layer_norm_eps=config.layer_norm_eps,
        initializer_range=config.initializer_range,
        token_dropout=config.token_dropout,
        emb_layer_norm_before=config.emb_layer_norm_before,
        mask_token_id=config.mask_token_id,
        pad_token_id=config.pad_token_id,
        # NT/AgroNT configs carry no <eos>; ESM's default (2) would be <mask> in this vocabulary.
        eos_token_id=None,
        tie_word_embeddings=False,
        id2label=config.id2label,
        label2id=config.label2id,
        **extra,
    )


def _tokenizer_from_vocab(vocab_file: Path) -> GenoLMTokenizer:
    """The genolm tokenizer whose ids equal an NT ``vocab.txt`` (one token per line, id = line number)."""
    tokens = vocab_file.read_text().split()
    kmers = [t for t in tokens if not t.startswith("<") and len(t) > 1]
    k = len(kmers[0]) if kmers else 1
    for layout in ("nt-v1", "nt-v2"):
        tokenizer = GenoLMTokenizer(vocab_layout=layout, k=k)
        vocab = tokenizer.get_vocab()
        if all(vocab.get(token) == i for i, token in enumerate(tokens)):
            return tokenizer
    raise InputDataError(
        f"{vocab_file}: vocabulary matches neither the NT v1 nor the NT v2 layout for k={k} "
        f"(first tokens: {tokens[:8]})"
    )


def _source_tokenizer(src: Path, config: GenoLMConfig) -> GenoLMTokenizer:
    """The tokenizer matching ``src``'s vocabulary, with the source's ``model_max_length`` (AgroNT ships 1024)
    or, without one, the model's positions."""
    if (src / "vocab.txt").exists():
        tokenizer = _tokenizer_from_vocab(src / "vocab.txt")
    else:
        logger.warning("%s has no vocab.txt; assuming the %s layout with k=%d", src, config.vocab_layout, config.k)
        tokenizer = GenoLMTokenizer(vocab_layout=config.vocab_layout, k=config.k)
    tokenizer_config = src / "tokenizer_config.json"
    if tokenizer_config.exists():
        source_max = json.loads(tokenizer_config.read_text()).get("model_max_length")
        if isinstance(source_max, (int, float)):
            tokenizer.model_max_length = int(min(source_max, config.max_tokens))
    return fit_model_max_length(tokenizer, config.max_tokens)


def reference_batch(tokenizer: GenoLMTokenizer, max_tokens: int, n: int = 2) -> dict[str, torch.Tensor]:
    """Real sequence to compare logits on: windows of the bundled chloroplast genome, the second one padded,
    with a few tokens masked."""
    from .examples import read_chloroplast

    genome = read_chloroplast()
    bases = (max_tokens - 1) * tokenizer.k
    sequences = [genome[10_000 + i * bases : 10_000 + (i + 1) * bases] for i in range(n)]
    sequences[-1] = sequences[-1][: len(sequences[-1]) // 2]
    batch = tokenizer(sequences, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    batch["input_ids"][:, 5:8] = tokenizer.mask_token_id
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@torch.no_grad()
def max_logits_difference(model_a, model_b, batch: dict[str, torch.Tensor]) -> float:
    """Largest absolute logit difference between two models on non-padding positions."""
    model_a.eval()
    model_b.eval()
    logits_a = model_a(**batch).logits.float()
    logits_b = model_b(**batch).logits.float()
    keep = batch["attention_mask"].bool()
    if logits_a.dim() == 2:  # sequence-level heads
        return (logits_a - logits_b).abs().max().item()
    return (logits_a[keep] - logits_b[keep]).abs().max().item()


def esm_to_genolm(
    src: str | Path, dst: str | Path, verify: bool = True, overwrite: bool = False
) -> GenoLMPreTrainedModel:
    """Convert a transformers ESM checkpoint folder (NT v1, AgroNT, or the NT-v2 Hub layout) to genolm.

    The converted model and a matching :class:`GenoLMTokenizer` are saved to ``dst`` only after the logits
    match the source model's (within ``LOGITS_TOLERANCE``) where transformers can run the source. ``dst`` must
    not be ``src`` nor lie inside it, and must be new or empty unless ``overwrite`` (then it is replaced); it
    appears complete or not at all.
    """
    src, dst = Path(src), Path(dst)
    check_outputs({}, {"src": src}, folders={"dst": dst}, overwrite=overwrite)
    esm_config = read_config_json(src)
    if esm_config.get("model_type") != "esm":
        raise InputDataError(f"{src / 'config.json'}: model_type is {esm_config.get('model_type')!r}, expected 'esm'")
    esm_state = load_state_dict(src)
    config = genolm_config_from_esm(esm_config, esm_state)
    tokenizer = _source_tokenizer(src, config)
    config.vocab_layout, config.k = tokenizer.vocab_layout, tokenizer.k
    config.cls_token_id = tokenizer.cls_token_id

    architecture = (esm_config.get("architectures") or ["EsmForMaskedLM"])[0]
    model_class = _HEADS.get(architecture)
    if model_class is None:
        raise InputDataError(f"{src}: unsupported architecture {architecture!r}; supported: {', '.join(_HEADS)}")
    state = {}
    for key, tensor in esm_state.items():
        try:
            new_key = esm_key_to_genolm(key)
        except InputDataError as err:
            raise InputDataError(f"{src}: {err}") from None
        if new_key is not None:
            state[new_key] = tensor
    if config.position_embedding_type == "rotary":
        # NT-v2 checkpoints carry an absolute position table (2050 x hidden) that rotary models never read.
        state = {k: v for k, v in state.items() if not k.endswith("embeddings.position_embeddings.weight")}
    if model_class is GenoLMModel:
        state = {k.removeprefix("genolm."): v for k, v in state.items()}
    model = model_class(config)
    check_weight_shapes(src, model.state_dict(), {k: v.shape for k, v in state.items()})
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("inv_freq")]
    if missing or unexpected:
        raise InputDataError(f"{src}: weights do not fit the converted architecture (missing {missing}, unexpected {unexpected})")

    if verify and config.ffn_type == "gelu":
        from transformers import (
            AutoModel,
            AutoModelForMaskedLM,
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
        )

        auto = {
            GenoLMForMaskedLM: AutoModelForMaskedLM,
            GenoLMForSequenceClassification: AutoModelForSequenceClassification,
            GenoLMForTokenClassification: AutoModelForTokenClassification,
            GenoLMModel: AutoModel,
        }[model_class]
        reference = auto.from_pretrained(src, attn_implementation="eager")
        batch = reference_batch(tokenizer, min(64, config.max_tokens))
        diff = _compare(reference, model, batch)
        if diff > LOGITS_TOLERANCE:
            raise ValueError(f"conversion of {src} does not reproduce its logits (max abs diff {diff:.3g})")
        logger.info("esm-to-genolm: max abs logit difference %.3g", diff)
    elif verify:
        logger.warning(
            "%s is an NT-v2 (SwiGLU) checkpoint, which transformers' EsmModel cannot run: weights were renamed "
            "without a logits comparison", src
        )
    with atomic_folder(dst, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return model


def _compare(model_a, model_b, batch) -> float:
    """Logit (or last-hidden-state, for bare encoders) difference between two models."""
    if hasattr(model_a, "lm_head") or hasattr(model_a, "classifier"):
        return max_logits_difference(model_a, model_b, batch)
    with torch.no_grad():
        a = model_a.eval()(**batch).last_hidden_state
        b = model_b.eval()(**batch).last_hidden_state
    keep = batch["attention_mask"].bool()
    return (a[keep] - b[keep]).abs().max().item()


def genolm_to_esm(src: str | Path, dst: str | Path, verify: bool = True, overwrite: bool = False):
    """Export a genolm checkpoint to transformers' ESM format (loads with plain transformers, no genolm).

    Writes the ESM model and an ``EsmTokenizer`` (``vocab.txt``) with the same ids. Refused with a clear
    message for architectures ESM cannot express (SwiGLU / bias-free feed-forward, i.e. NT v2). ``dst`` follows
    the rules of :func:`esm_to_genolm`.
    """
    from transformers import (
        EsmForMaskedLM,
        EsmForSequenceClassification,
        EsmForTokenClassification,
        EsmModel,
    )

    src, dst = Path(src), Path(dst)
    check_outputs({}, {"src": src}, folders={"dst": dst}, overwrite=overwrite)
    if read_config_json(src).get("model_type") != "genolm":
        raise InputDataError(f"{src / 'config.json'}: model_type is not 'genolm' (is this an ESM checkpoint?)")
    config = GenoLMConfig.from_pretrained(src)
    try:
        esm_config = esm_config_from_genolm(config)  # raises for NT-v2 architectures
    except InputDataError as err:
        raise InputDataError(f"{src}: {err}") from None
    if config.per_nucleotide:
        raise InputDataError(f"{src}: per-nucleotide token classification has no ESM equivalent")
    architecture = (config.architectures or ["GenoLMForMaskedLM"])[0]
    esm_class = {
        "GenoLMForMaskedLM": EsmForMaskedLM,
        "GenoLMForSequenceClassification": EsmForSequenceClassification,
        "GenoLMForTokenClassification": EsmForTokenClassification,
        "GenoLMModel": EsmModel,
    }.get(architecture)
    if esm_class is None:
        raise InputDataError(f"{src}: unsupported architecture {architecture!r}")
    state = {genolm_key_to_esm(k): v for k, v in load_state_dict(src).items()}
    if esm_class is EsmModel:
        esm_model = EsmModel(esm_config, add_pooling_layer=False)
    else:
        esm_model = esm_class(esm_config)
    check_weight_shapes(src, esm_model.state_dict(), {k: v.shape for k, v in state.items()})
    missing, unexpected = esm_model.load_state_dict(state, strict=False)
    # ESM's protein contact-prediction head has no meaning for DNA; its weights are left at their init.
    missing = [k for k in missing if "contact_head" not in k and not k.endswith("inv_freq")]
    if missing or unexpected:
        raise InputDataError(f"{src}: cannot map weights to ESM (missing {missing}, unexpected {unexpected})")

    tokenizer = fit_model_max_length(GenoLMTokenizer.from_pretrained(src), config.max_tokens)
    if verify:
        from transformers import AutoModel

        source = AutoModel.from_pretrained(src) if esm_class is EsmModel else _auto_genolm(src, architecture)
        esm_model.config._attn_implementation = "eager"
        batch = reference_batch(tokenizer, min(64, config.max_tokens))
        diff = _compare(source, esm_model, batch)
        if diff > LOGITS_TOLERANCE:
            raise ValueError(f"export of {src} to ESM does not reproduce its logits (max abs diff {diff:.3g})")
    esm_model.config._attn_implementation = "sdpa"
    with atomic_folder(dst, overwrite=overwrite) as tmp:
        esm_model.save_pretrained(tmp)
        write_esm_tokenizer(tokenizer, tmp)
    return esm_model


def _auto_genolm(src: Path, architecture: str):
    from transformers import (
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    auto = {
        "GenoLMForMaskedLM": AutoModelForMaskedLM,
        "GenoLMForSequenceClassification": AutoModelForSequenceClassification,
        "GenoLMForTokenClassification": AutoModelForTokenClassification,
    }[architecture]
    return auto.from_pretrained(src)


def write_esm_tokenizer(tokenizer: GenoLMTokenizer, dst: str | Path):
    """Save an ``EsmTokenizer`` with the same vocabulary and ids as ``tokenizer`` (NT's published format:
    ``vocab.txt``, ``<cls>`` prepended, no ``<eos>``)."""
    from transformers import EsmTokenizer

    dst = Path(dst)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    if [i for _, i in vocab] != list(range(len(vocab))):
        raise ValueError("tokenizer ids are not contiguous; cannot write vocab.txt")
    vocab_file = dst / "vocab.txt"
    vocab_file.write_text("\n".join(token for token, _ in vocab) + "\n")
    esm_tokenizer = EsmTokenizer(
        str(vocab_file),
        unk_token="<unk>",
        cls_token="<cls>",
        pad_token="<pad>",
        mask_token="<mask>",
        eos_token=None,
        model_max_length=tokenizer.model_max_length,
    )
    esm_tokenizer.save_pretrained(dst)
    return esm_tokenizer


__all__ = [
    "check_weight_shapes",
    "esm_config_from_genolm",
    "esm_key_to_genolm",
    "esm_to_genolm",
    "genolm_config_from_esm",
    "genolm_key_to_esm",
    "genolm_to_esm",
    "load_state_dict",
    "read_config_json",
    "weight_files",
    "weight_shapes",
    "write_esm_tokenizer",
]
