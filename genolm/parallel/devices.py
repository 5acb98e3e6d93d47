"""Which device and which dtype: the one resolver behind inference (``--device`` / ``--dtype``), embeddings and
the training recipes (``mixed_precision``)."""

from __future__ import annotations

import torch

from ..errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``None`` or ``"auto"``: the first CUDA device if there is one, else the CPU; otherwise ``device``
    itself (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"device {device!r}: {error}") from None


def resolve_dtype(dtype: str | torch.dtype | None = "auto", device: torch.device | None = None) -> torch.dtype:
    """Inference weights' dtype. ``None``/``"auto"``: float32 on every device (scores reproducible to ~1e-6);
    else one of ``float32``, ``bfloat16``, ``float16`` (half precision only makes sense on an accelerator).
    ``device`` is accepted so that a future "auto" may depend on it."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r}: expected one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_mixed_precision(mixed_precision: str, device_type: str) -> str:
    """Training autocast mode: ``"auto"`` is ``"bf16"`` on an accelerator (``cuda``, or an XLA device other
    than the CPU: pass ``"tpu"`` ...) and ``"no"`` on the CPU; other values are returned unchanged."""
    if mixed_precision != "auto":
        return mixed_precision
    return "no" if device_type.lower() == "cpu" else "bf16"


__all__ = ["DTYPES", "resolve_device", "resolve_dtype", "resolve_mixed_precision"]
