"""Summaries of checkpoints and configurations (``genolm info``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .configuration_genolm import GenoLMConfig


def count_parameters(config: GenoLMConfig, architecture: str = "GenoLMForMaskedLM") -> int:
    """Parameters of ``architecture`` built from ``config``, counted on the meta device (no memory used)."""
    import genolm

    model_class = getattr(genolm, architecture)
    with torch.device("meta"):
        model = model_class(config)
    return sum(p.numel() for p in model.parameters())


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """Architecture, parameter count, vocabulary layout and context length of a checkpoint folder."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{path}: no config.json (is this a Hugging Face checkpoint folder?)")
    raw = json.loads(config_file.read_text())
    if raw.get("model_type") == "esm":
        from .convert import genolm_config_from_esm

        config = genolm_config_from_esm(raw)
        source_format = "esm (transformers)"
        architecture = (raw.get("architectures") or ["EsmForMaskedLM"])[0].replace("Esm", "GenoLM")
    elif raw.get("model_type") == "genolm":
        config = GenoLMConfig.from_pretrained(path)
        source_format = "genolm"
        architecture = (config.architectures or ["GenoLMForMaskedLM"])[0]
    else:
        raise ValueError(f"{config_file}: model_type {raw.get('model_type')!r} is neither 'genolm' nor 'esm'")
    positions = "rotary" if config.position_embedding_type == "rotary" else "learned absolute"
    return {
        "path": str(path),
        "format": source_format,
        "architecture": architecture,
        "parameters": count_parameters(config, architecture),
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
