"""Model FLOPs per token and model-FLOPs utilisation (MFU).

MFU = achieved model FLOPs per second / the hardware's peak. Model FLOPs count the matrix multiplications
the model needs, attention included, not the recomputation of gradient checkpointing (PaLM, Chowdhery et al.
2022, appendix B). Per token of a sequence of ``T`` tokens, forward pass:

- each layer: ``2 * P_layer`` for its weight matmuls (``P_layer``: Q, K, V, output and feed-forward weights)
  plus ``4 * T * d`` for the attention scores ``QK^T`` and the weighted sum ``AV`` (``d`` = hidden size;
  bidirectional attention, so the full ``T x T`` score matrix is computed);
- the masked-LM head: ``2 * (d * d + d * V)`` at every position it is applied to (with
  ``sparse_prediction`` only at the ~15 % of selected tokens).

Training costs three forward passes (forward + backward, which is twice the forward).
"""

from __future__ import annotations

import re
import time

import torch

# Dense bf16 peak FLOP/s per chip (TPU) or per GPU. Sources:
# - TPU v4: 275 TFLOPs bf16 per chip, Google Cloud TPU v4 documentation (cloud.google.com/tpu/docs/v4).
# - TPU v5e: 197 TFLOPs, v5p: 459 TFLOPs bf16 per chip (cloud.google.com/tpu/docs/v5e, /v5p).
# - TPU v6e (Trillium): 918 TFLOPs bf16 per chip (cloud.google.com/tpu/docs/v6e).
# - A100: 312 TFLOPS bf16 Tensor Core, dense (NVIDIA A100 Tensor Core GPU datasheet).
# - H100 SXM: 989 TFLOPS bf16 dense (the datasheet's 1,979 is with 2:4 sparsity); H100 PCIe: 756
#   (NVIDIA H100 Tensor Core GPU datasheet). H200 and GH200 have the H100 SXM compute: 989 (NVIDIA H200 and
#   GH200 datasheets).
# - B200: 2,250 TFLOPS bf16 dense (NVIDIA HGX B200: 18 PFLOPS sparse over 8 GPUs, half of it dense).
# - L4: 121 TFLOPS bf16 dense (242 with sparsity); L40S: 362 (733 with sparsity) (NVIDIA datasheets).
PEAK_FLOPS: dict[str, float] = {
    "tpu-v4": 275e12,
    "tpu-v5e": 197e12,
    "tpu-v5p": 459e12,
    "tpu-v6e": 918e12,
    "a100": 312e12,
    "h100-sxm": 989e12,
    "h100-pcie": 756e12,
    "h200": 989e12,
    "gh200": 989e12,
    "b200": 2250e12,
    "l4": 121e12,
    "l40s": 362e12,
}

_measured_cpu_peak: float | None = None


def flops_per_token(config, seq_len: int, lm_head_fraction: float = 1.0, training: bool = True) -> float:
    """Model FLOPs per token (see the module docstring).

    Args:
        config: a ``GenoLMConfig``.
        seq_len: tokens per sequence (the padded length the model runs on).
        lm_head_fraction: fraction of positions the LM head runs on (1.0, or ``mlm_probability`` with
            ``sparse_prediction``).
        training: forward + backward (x3) rather than forward only.
    """
    d, inner, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    ffn = 3 * d * inner if config.ffn_type == "swiglu" else 2 * d * inner
    per_layer = 2 * (4 * d * d + ffn) + 4 * seq_len * d
    head = 2 * (d * d + d * vocab) * lm_head_fraction
    forward = layers * per_layer + head
    return 3 * forward if training else forward


def measure_cpu_peak_flops(sizes: tuple[int, ...] = (256, 512, 1024), seconds: float = 0.2) -> float:
    """Measured fp32 matmul FLOP/s of this CPU with torch's current thread count (cached per process).

    CPUs have no single published peak that applies to a given machine share, so MFU on CPU is reported
    against this measurement: the best rate of dense square matmuls of a few sizes (the best size depends on
    the caches), each timed for ``seconds``.
    """
    global _measured_cpu_peak
    if _measured_cpu_peak is None:
        best = 0.0
        for size in sizes:
            a, b = torch.randn(size, size), torch.randn(size, size)
            for _ in range(3):  # warm-up
                torch.mm(a, b)
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                torch.mm(a, b)
                best = max(best, 2 * size**3 / (time.perf_counter() - start))
        _measured_cpu_peak = best
    return _measured_cpu_peak


def peak_flops(device_kind: str) -> float | None:
    """Peak FLOP/s of one device: the table entry for ``device_kind``, a measurement for ``"cpu"``, or None
    for hardware not in the table (MFU is then not reported)."""
    if device_kind == "cpu":
        return measure_cpu_peak_flops()
    return PEAK_FLOPS.get(device_kind)


def device_kind(raw_name: str | None) -> str | None:
    """Key of ``PEAK_FLOPS`` (or ``"cpu"``) for a device name as the runtimes report it; None when unknown.

    Accepts CUDA names (``torch.cuda.get_device_name()``: "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"),
    PJRT TPU device kinds (torch-xla's ``xla_device_kind()``, JAX's ``device_kind``: "TPU v4", "TPU v5 lite"
    (v5e), "TPU v5" (v5p), "TPU v6 lite" (v6e), and the spelled-out "TPU v5e" / "TPU v5p" / "TPU v6e"),
    Cloud TPU accelerator types ("v4-8", "v5litepod-16", "v5p-128", "v6e-8", or torch-xla's ``get_tpu_type()``
    form "v5litepod", "v6e"), table keys and "cpu". A generation number alone ("tpu-v5", "v5") does not tell
    v5e from v5p (2.3x apart) and gives None.
    """
    if not raw_name:
        return None
    name = raw_name.strip().lower()
    if name == "cpu" or name in PEAK_FLOPS:
        return name
    tpu = re.fullmatch(r"tpu\s*v(\d+)\s*(lite|e|p)?", name) or re.fullmatch(r"v(\d+)(litepod|lite|e|p)?(?:-\d+)?", name)
    if tpu:
        version, variant = tpu.group(1), tpu.group(2)
        if variant is None:
            # PJRT names v4 "TPU v4" and v5p "TPU v5"; accelerator types are "v4-8" and "v5p-8".
            key = {"4": "tpu-v4", "5": "tpu-v5p"}.get(version) if name.startswith("tpu") else f"tpu-v{version}"
        elif variant in ("lite", "litepod", "e"):
            key = f"tpu-v{version}e"
        else:
            key = f"tpu-v{version}p"
        return key if key in PEAK_FLOPS else None
    for marker, key in (("gh200", "gh200"), ("h200", "h200"), ("a100", "a100"), ("b200", "b200"), ("l40s", "l40s")):
        if marker in name:
            return key
    if "h100" in name:
        return "h100-pcie" if "pcie" in name else "h100-sxm"
    if re.search(r"\bl4\b", name):
        return "l4"
    return None


def gpu_kind(name: str) -> str | None:
    """Table key for a CUDA device name (``torch.cuda.get_device_name()``); see :func:`device_kind`."""
    return device_kind(name)


def mfu(tokens_per_s: float, flops_token: float, peak_per_device: float | None, num_devices: int) -> float | None:
    """Model FLOPs utilisation in [0, 1] (None when the peak is unknown)."""
    if not peak_per_device:
        return None
    return tokens_per_s * flops_token / (peak_per_device * num_devices)


__all__ = ["PEAK_FLOPS", "device_kind", "flops_per_token", "gpu_kind", "measure_cpu_peak_flops", "mfu", "peak_flops"]
