"""Summaries of checkpoints and configurations (``genolm info``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .configuration_genolm import GenoLMConfig
from .errors import InputDataError
from .hub import local_model_folder


def _meta_model(config: GenoLMConfig, architecture: str) -> torch.nn.Module:
    import genolm

    model_class = getattr(genolm, architecture)
    with torch.device("meta"):
        return model_class(config)


def count_parameters(config: GenoLMConfig, architecture: str = "GenoLMForMaskedLM") -> int:
    """Parameters of ``architecture`` built from ``config``, counted on the meta device (no memory used)."""
    return sum(p.numel() for p in _meta_model(config, architecture).parameters())


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """Architecture, parameter count, vocabulary layout and context length of a checkpoint folder.

    The weights' shapes (read from the file headers) must match the configuration: a folder without weights, a
    corrupt weights file or e.g. a ``vocab_size`` that does not fit the embedding table is an
    :class:`~genolm.errors.InputDataError` naming the path.
    """
    import genolm

    from .convert import (
        check_weight_shapes,
        esm_key_to_genolm,
        genolm_config_from_esm,
        read_config_json,
        weight_shapes,
    )

    path = local_model_folder(path)
    config_file = path / "config.json"
    raw = read_config_json(path)
    shapes = weight_shapes(path)
    if raw.get("model_type") == "esm":
        # Meta tensors: the config translation reads the feed-forward shape (SwiGLU or not) from the weights.
        config = genolm_config_from_esm(raw, {key: torch.empty(shape, device="meta") for key, shape in shapes.items()})
        try:
            renamed = {key: (esm_key_to_genolm(key), shape) for key, shape in shapes.items()}
        except InputDataError as err:
            raise InputDataError(f"{path}: {err}") from None
        shapes = {key: shape for key, shape in renamed.values() if key is not None}
        source_format = "esm (transformers)"
        read_as = (raw.get("architectures") or ["EsmForMaskedLM"])[0]
        architecture = read_as.replace("Esm", "GenoLM")
    elif raw.get("model_type") == "genolm":
        config = GenoLMConfig.from_pretrained(path)
        source_format = "genolm"
        architecture = read_as = (config.architectures or ["GenoLMForMaskedLM"])[0]
    else:
        raise InputDataError(f"{config_file}: model_type {raw.get('model_type')!r} is neither 'genolm' nor 'esm'")
    if not hasattr(genolm, architecture):
        raise InputDataError(f"{config_file}: unknown architecture {architecture!r}")
    model = _meta_model(config, architecture)
    check_weight_shapes(path, model.state_dict(), shapes)
    positions = "rotary" if config.position_embedding_type == "rotary" else "learned absolute"
    return {
        "path": str(path),
        "format": source_format,
        "architecture": read_as if read_as == architecture else f"{read_as} (read as genolm's {architecture})",
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "attention_heads": config.num_attention_heads,
        "ffn": f"{config.ffn_type} ({config.intermediate_size}{', bias' if config.ffn_bias else ', no bias'})",
        "positions": positions,
        "vocab_layout": config.vocab_layout,
        "vocab_size": config.vocab_size,
        "k": config.k,
        "context_tokens": config.max_tokens,
        "context_bp": (config.max_tokens - 1) * config.k,
        "token_dropout": config.token_dropout,
    }


def format_info(info: dict[str, Any]) -> str:
    """Human-readable two-column rendering of :func:`checkpoint_info`."""
    width = max(len(key) for key in info)
    lines = []
    for key, value in info.items():
        if key == "parameters":
            value = f"{value:,} ({value / 1e6:.1f} M)"
        elif key == "context_bp":
            value = f"~{value:,} bp"
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)
