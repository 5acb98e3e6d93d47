"""Memory and time plan of a pretraining run, before any weight is allocated.

Per device, the plan adds up what the training step keeps in memory, as the backends in
:mod:`genolm.parallel` really keep it:

- model state. Every backend keeps fp32 parameters (they are the master weights: bf16 is autocast or, under
  FSDP2, a compute copy), fp32 gradients and AdamW's two fp32 moments: 4 + 4 + 8 bytes per parameter, divided
  by the devices under ``fsdp`` / ``xla_fsdp`` (FSDP2 and SPMD FSDPv2 shard all three). DDP adds its gradient
  buckets (4 bytes per parameter). One process under bf16 autocast caches a bf16 copy of every weight for the
  forward and backward passes (2 bytes per parameter). The sharded backends gather whole layers instead:
  two layers at a time (the running one and the prefetched one; FSDP2 in the compute dtype, torch-xla in
  fp32) plus the unsharded root parameters (embeddings and LM head), and one layer's unsharded gradients
  before their reduce-scatter.
- activations: the tensors the autograd graph saves for the backward pass, counted tensor by tensor for
  this model's layers (:func:`activation_bytes`), which depends on the precision (under bf16 autocast the
  residual stream and LayerNorms stay fp32 and each linear layer saves its own bf16 copy of its input), the
  attention implementation (``eager`` saves the (heads, tokens, tokens) probabilities; ``sdpa`` only its
  output and log-sum-exp), the LM head (every position, or only the ~15 % masked ones with
  ``sparse_prediction``) and gradient checkpointing (each layer's input, plus one layer recomputed in the
  backward pass); plus the backward pass's workspace (the gradients of the largest activations).

Tensor parallelism over ``N`` devices splits the layers' weights and the attention and feed-forward
activations ``N`` ways; the batch is sharded over the ``D / N`` data-parallel groups, so each group of ``N``
devices runs ``N * batch_size`` sequences and the global batch stays ``batch_size * D`` sequences.

The estimate is of eager PyTorch; XLA's compiler fuses and reuses buffers and usually needs less for
activations. ``benchmarks/memory_plan.py`` compares it with the measured peak of real CPU training steps.

Time: model FLOPs per token (:func:`genolm.training.flops.flops_per_token`) x tokens / (peak FLOP/s x devices x
MFU). MFU is a stated assumption (0.4 by default), not a measurement.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

GiB = 2**30
FP32 = 4


@dataclass(frozen=True)
class DeviceKind:
    """One accelerator model: its memory and the key of its peak FLOP/s in ``flops.PEAK_FLOPS``."""

    name: str
    memory: float | None  # bytes per device; None: the host's available memory (CPU)
    flops_key: str


# Memory per device, from the vendors' documents: Cloud TPU system architecture pages (v4: 32 GiB HBM2 per
# chip; v5e: 16 GiB; v5p: 95 GiB; v6e: 32 GiB) and NVIDIA's datasheets (A100 40/80 GB, H100 80 GB, H200 141 GB,
# GH200 96 GB, B200 180 GB in HGX B200, L4 24 GB, L40S 48 GB). Peak FLOP/s: genolm.training.flops.PEAK_FLOPS.
DEVICES: dict[str, DeviceKind] = {
    kind.name: kind
    for kind in (
        DeviceKind("tpu-v4", 32 * GiB, "tpu-v4"),
        DeviceKind("tpu-v5e", 16 * GiB, "tpu-v5e"),
        DeviceKind("tpu-v5p", 95 * GiB, "tpu-v5p"),
        DeviceKind("tpu-v6e", 32 * GiB, "tpu-v6e"),
        DeviceKind("a100-40", 40 * GiB, "a100"),
        DeviceKind("a100-80", 80 * GiB, "a100"),
        DeviceKind("h100", 80 * GiB, "h100-sxm"),
        DeviceKind("h100-pcie", 80 * GiB, "h100-pcie"),
        DeviceKind("h200", 141 * GiB, "h200"),
        DeviceKind("gh200", 96 * GiB, "gh200"),
        DeviceKind("b200", 180 * GiB, "b200"),
        DeviceKind("l4", 24 * GiB, "l4"),
        DeviceKind("l40s", 48 * GiB, "l40s"),
        DeviceKind("cpu", None, "cpu"),
    )
}
# Other names of the same devices (flops.PEAK_FLOPS keys and the runtimes' device kinds).
ALIASES = {"h100-sxm": "h100", "a100": "a100-80"}


def parse_devices(spec: str) -> tuple[DeviceKind, int]:
    """``"tpu-v4:512"`` -> (the TPU v4 kind, 512); the count defaults to 1. :class:`ConfigError` otherwise."""
    name, _, count = spec.strip().lower().partition(":")
    kind = DEVICES.get(ALIASES.get(name, name))
    if kind is None:
        raise ConfigError(
            f"devices {spec!r}: unknown device {name!r}; expected KIND[:COUNT] with KIND one of {', '.join(DEVICES)}"
        )
    try:
        number = int(count) if count else 1
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"devices {spec!r}: the count after ':' must be a whole number >= 1, got {count!r}")
    return kind, number


def host_available_memory() -> float:
    """Bytes of host memory available now (``MemAvailable``), for plans on the CPU."""
    import psutil

    return float(psutil.virtual_memory().available)


# ------------------------------------------------------------------------------------------------------
# parameter counts
# ------------------------------------------------------------------------------------------------------
def layer_parameter_count(config: Any) -> int:
    """Parameters of one ``GenoLMLayer``: two LayerNorms, Q/K/V/output projections with biases, the
    feed-forward block (SwiGLU's up projection is twice as wide)."""
    d, inner = config.hidden_size, config.intermediate_size
    up = 2 * inner if config.ffn_type == "swiglu" else inner
    ffn = d * up + inner * d + ((up + d) if config.ffn_bias else 0)
    return 2 * 2 * d + 4 * (d * d + d) + ffn


def parameter_count(config: Any) -> int:
    """Exact parameter count of ``GenoLMForMaskedLM(config)``: embeddings, layers, final LayerNorm, LM head
    (dense, LayerNorm, untied decoder and its bias)."""
    d, vocab = config.hidden_size, config.vocab_size
    embeddings = vocab * d
    if config.position_embedding_type == "absolute":
        embeddings += config.max_position_embeddings * d
    if config.emb_layer_norm_before:
        embeddings += 2 * d
    head = (d * d + d) + 2 * d + d * vocab + vocab
    return embeddings + config.num_hidden_layers * layer_parameter_count(config) + 2 * d + head


# ------------------------------------------------------------------------------------------------------
# activations
# ------------------------------------------------------------------------------------------------------
def activation_bytes(
    config: Any,
    batch: int,
    seq_len: int,
    *,
    bf16: bool,
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
    sparse: bool = False,
    lm_head_fraction: float = 0.15,
    tensor_parallel: int = 1,
) -> dict[str, float]:
    """Bytes of one device's saved activations and backward workspace for one micro-batch.

    ``batch`` sequences of ``seq_len`` tokens per device (each tensor-parallel group of ``tensor_parallel``
    devices runs ``batch * tensor_parallel`` sequences). ``bf16``: autocast (activations in bf16, residual
    stream and LayerNorms in fp32). ``sparse``: the LM head runs at ``lm_head_fraction`` of the positions.
    Returns ``{"activations": ..., "backward_workspace": ...}``.
    """
    d, inner, heads, vocab = config.hidden_size, config.intermediate_size, config.num_attention_heads, config.vocab_size
    n = tensor_parallel
    a = 2 if bf16 else FP32  # bytes of a matmul output
    tokens = batch * n * seq_len  # tokens of this device's tensor-parallel group
    # Per token and layer, whole on every device of the group: the layer input and the second LayerNorm's
    # input (fp32 residual stream) with their mean/rstd, and what the linear layers save of the LayerNorm
    # outputs: the fp32 output once each, or under autocast one bf16 copy per consuming linear (Q, K, V; up).
    whole = 2 * (FP32 * d + 8) + ((3 + 1) * 2 * d if bf16 else 2 * FP32 * d)
    # Split over the tensor-parallel devices: Q, K, V and the attention output (which the output projection
    # saves as a view), the feed-forward inner activations.
    split = 4 * a * d
    if attn_implementation == "eager":
        split += heads * seq_len * (FP32 + (2 if bf16 else 0))  # fp32 softmax (+ its bf16 copy for AV)
    else:
        split += FP32 * heads  # log-sum-exp
    up_width = 2 * inner if config.ffn_type == "swiglu" else inner
    split += a * (up_width + inner)  # up output, then silu(gate) * up (SwiGLU: two tensors) or GELU's output
    if config.ffn_type == "swiglu":
        split += a * inner
    per_layer = tokens * (whole + split / n)
    layer_workspace = tokens * (a * up_width / n + 2 * FP32 * d)  # gradients of the largest activations
    # Around the layers: the final LayerNorm's input, masks, labels and indices; then the LM head at
    # `head_rows` rows: its input (fp32, or a bf16 copy), dense and GELU outputs (an fp32 copy of the latter
    # for the LayerNorm under autocast), the LayerNorm output, fp32 logits (the LM head's bias is fp32) and the
    # loss's fp32 log-softmax (twice with a sparse head: the model's own loss too). The backward pass starts
    # with the gradients of the log-softmax and of the logits.
    around = tokens * (FP32 * d + 8 + 24)
    head_rows = tokens * (lm_head_fraction if sparse else 1.0)
    head_row = (10 * d if bf16 else 16 * d) + 8 + 2 * FP32 * vocab + (FP32 * vocab if sparse else 0)
    head = head_rows * head_row
    head_workspace = head_rows * vocab * (2 * FP32 + (2 if bf16 else 0))
    layers = config.num_hidden_layers
    if not gradient_checkpointing:
        return {"activations": layers * per_layer + around + head, "backward_workspace": max(head_workspace, layer_workspace)}
    # Checkpointing keeps each layer's input; the backward pass first goes through the LM head, then
    # recomputes one layer at a time: the peak is the larger of the two phases.
    kept = layers * tokens * FP32 * d + around
    if head + head_workspace >= per_layer + layer_workspace:
        return {"activations": kept + head, "backward_workspace": head_workspace}
    return {"activations": kept + per_layer, "backward_workspace": layer_workspace}


# ------------------------------------------------------------------------------------------------------
# the plan
# ------------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Per-device memory (bytes) and step/time figures of a pretraining configuration on some devices."""

    model: str
    parameters: int
    device: DeviceKind
    num_devices: int
    backend: str
    tensor_parallel: int
    bf16: bool
    batch_size: int
    gradient_accumulation_steps: int
    seq_len: int
    gradient_checkpointing: bool
    attn_implementation: str
    sparse: bool
    memory: dict[str, float]
    memory_limit: float | None
    tokens_per_step: int
    flops_per_token: float
    peak_flops: float | None
    mfu: float
    tokens: float
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.memory.values())

    @property
    def fits(self) -> bool:
        return self.memory_limit is None or self.total <= self.memory_limit

    @property
    def step_seconds(self) -> float | None:
        if not self.peak_flops:
            return None
        return self.tokens_per_step * self.flops_per_token / (self.peak_flops * self.num_devices * self.mfu)

    @property
    def total_seconds(self) -> float | None:
        step = self.step_seconds
        return None if step is None else step * self.tokens / self.tokens_per_step

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "parameters": self.parameters,
            "device": self.device.name,
            "num_devices": self.num_devices,
            "backend": self.backend,
            "tensor_parallel": self.tensor_parallel,
            "precision": "bf16" if self.bf16 else "fp32",
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "seq_len": self.seq_len,
            "gradient_checkpointing": self.gradient_checkpointing,
            "attn_implementation": self.attn_implementation,
            "sparse_prediction": self.sparse,
            "memory_bytes": dict(self.memory),
            "total_bytes": self.total,
            "memory_limit_bytes": self.memory_limit,
            "fits": self.fits,
            "tokens_per_step": self.tokens_per_step,
            "flops_per_token": self.flops_per_token,
            "flops_per_step": self.flops_per_token * self.tokens_per_step,
            "peak_flops_per_device": self.peak_flops,
            "mfu": self.mfu,
            "step_seconds": self.step_seconds,
            "tokens": self.tokens,
            "total_seconds": self.total_seconds,
        }

    def format(self) -> str:
        """A readable table: the setting, memory per device by part, then steps and time."""
        gib = format_bytes
        limit = "no limit" if self.memory_limit is None else gib(self.memory_limit).strip()
        lines = [
            f"memory plan: {self.model} ({self.parameters:,} parameters) on {self.num_devices} x {self.device.name}, "
            f"{self.backend}"
            + (f", tensor_parallel {self.tensor_parallel}" if self.tensor_parallel > 1 else "")
            + f", {'bf16' if self.bf16 else 'fp32'}, {self.attn_implementation}"
            + (", gradient checkpointing" if self.gradient_checkpointing else ""),
            f"  batch {self.batch_size} x {self.seq_len} tokens per device x {self.gradient_accumulation_steps} "
            f"accumulation = {self.tokens_per_step:,} tokens/step",
            "  per device:",
        ]
        for name, value in self.memory.items():
            lines.append(f"    {name.replace('_', ' '):<28}{gib(value)}")
        share = "" if self.memory_limit is None else f" ({100 * self.total / self.memory_limit:.0f} % of {limit})"
        lines.append(f"    {'total':<28}{gib(self.total)}{share}")
        flops_step = self.flops_per_token * self.tokens_per_step
        lines.append(f"  compute: {self.flops_per_token:.3g} FLOPs/token, {flops_step:.3g} FLOPs/step")
        if self.step_seconds is not None:
            lines.append(
                f"  at MFU {self.mfu:g} ({self.peak_flops / 1e12:g} TFLOP/s peak per device): "
                f"{self.step_seconds:.3g} s/step, {self.tokens:.3g} tokens in {format_duration(self.total_seconds)}"
            )
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def check(self) -> None:
        """:class:`ConfigError` (one line, what to change) when the estimate exceeds the memory limit."""
        if self.fits:
            return
        biggest = sorted(self.memory.items(), key=lambda item: -item[1])[:3]
        parts = ", ".join(f"{name.replace('_', ' ')} {format_bytes(value).strip()}" for name, value in biggest)
        # Only what reduces the larger parts: sharding divides the model state over the devices, tensor
        # parallelism the gathered layers (while replicating part of the activations), checkpointing and
        # smaller micro-batches the activations.
        memory = self.memory
        state = memory["parameters"] + memory["gradients"] + memory["optimizer_state"]
        activations = memory["activations"] + memory["backward_workspace"]
        advice = []
        if self.backend in ("none", "ddp"):
            advice.append("parallel: fsdp (xla_fsdp on TPUs) to shard the model")
        elif state > 0.25 * self.total:
            advice.append("more devices")
        if self.backend in ("fsdp", "xla_fsdp") and memory.get("gathered_layers", 0) + state > activations:
            advice.append("tensor_parallel")
        if not self.gradient_checkpointing:
            advice.append("gradient_checkpointing: true")
        if self.batch_size > 1:
            advice.append(f"a smaller batch_size (now {self.batch_size}) with more gradient_accumulation_steps")
        raise ConfigError(
            f"the memory plan needs {format_bytes(self.total).strip()} per device ({parts}) but the limit on "
            f"{self.device.name} is {format_bytes(self.memory_limit).strip()}: use " + ", ".join(advice or ["more memory"])
            + " (or set memory_limit_gib)"
        )


def format_bytes(value: float) -> str:
    """``value`` bytes in MiB below 1 GiB, else in GiB, right-aligned to 12 characters."""
    if value < GiB:
        return f"{value / 2**20:8.1f} MiB"
    return f"{value / GiB:8.2f} GiB"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def model_state_bytes(
    config: Any, backend: str, num_devices: int, bf16: bool, tensor_parallel: int = 1
) -> dict[str, float]:
    """Per-device bytes of parameters, gradients, AdamW moments and the backend's extra weight copies."""
    total = parameter_count(config)
    layer = layer_parameter_count(config)
    root = total - config.num_hidden_layers * layer  # embeddings, final LayerNorm, LM head
    shards = num_devices if backend in ("fsdp", "xla_fsdp") else 1
    memory = {
        "parameters": FP32 * total / shards,
        "gradients": FP32 * total / shards,
        "optimizer_state": 2 * FP32 * total / shards,
    }
    if backend == "ddp":
        memory["ddp_gradient_buckets"] = FP32 * total
    if backend in ("none", "ddp") and bf16:
        memory["bf16_weight_copies"] = 2 * total
    if backend in ("fsdp", "xla_fsdp") and shards > 1:
        # FSDP2 gathers in the compute dtype (bf16 by its MixedPrecisionPolicy); FSDPv2 gathers fp32 weights.
        gathered = 2 if (bf16 and backend == "fsdp") else FP32
        grad_bytes = gathered + (FP32 if gathered != FP32 else 0)  # unsharded grads, cast to fp32 to reduce
        memory["gathered_layers"] = (2 * layer * gathered + layer * grad_bytes) / tensor_parallel + root * gathered
    return memory


def plan_pretraining(
    cfg: Any,
    devices: str | tuple[DeviceKind, int],
    *,
    model_config: Any = None,
    backend: str | None = None,
    tensor_parallel: int | None = None,
    bf16: bool | None = None,
    sparse: bool | None = None,
    mfu: float = 0.4,
    tokens: float | None = None,
    memory_limit: float | None = None,
) -> Plan:
    """The :class:`Plan` of a ``PretrainConfig`` on ``devices`` (``"tpu-v4:512"`` or a parsed pair).

    Args:
        model_config: the ``GenoLMConfig`` (default: the config's preset with its overrides).
        backend: ``none``, ``ddp``, ``fsdp`` or ``xla_fsdp`` (default: ``cfg.parallel``; ``auto`` is
            ``xla_fsdp`` on TPUs, ``none`` on one device, else ``ddp``, as ``--parallel auto`` without an
            Accelerate FSDP config).
        tensor_parallel: devices per tensor-parallel group (default: ``cfg.tensor_parallel`` if the config has
            it, else 1).
        bf16: autocast (default: ``cfg.mixed_precision``, ``auto`` being bf16 except on the CPU).
        sparse: LM head only at masked positions (default: ``cfg.sparse_prediction``, ``auto`` being on except
            under ``xla_fsdp``).
        mfu: assumed model-FLOPs utilisation for the time estimate.
        tokens: token budget of the time estimate (default: ``max_steps`` steps).
        memory_limit: bytes per device the total must fit in (default: the device's memory; on the CPU the
            host's available memory shared by ``num_devices``); 0 or negative: no limit.
    """
    from ..configuration_genolm import GenoLMConfig
    from .flops import PEAK_FLOPS, flops_per_token, measure_cpu_peak_flops

    kind, num_devices = parse_devices(devices) if isinstance(devices, str) else devices
    if model_config is None:
        try:
            model_config = GenoLMConfig.from_preset(cfg.model, **cfg.model_overrides)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    backend = backend or cfg.parallel
    if backend == "auto":
        backend = "xla_fsdp" if kind.name.startswith("tpu") else ("none" if num_devices == 1 else "ddp")
    tensor_parallel = tensor_parallel or int(getattr(cfg, "tensor_parallel", 1) or 1)
    if num_devices % tensor_parallel:
        raise ConfigError(f"tensor_parallel={tensor_parallel} does not divide the {num_devices} devices")
    if tensor_parallel > 1 and backend not in ("fsdp", "xla_fsdp"):
        raise ConfigError(f"tensor_parallel={tensor_parallel} needs parallel fsdp or xla_fsdp, not {backend}")
    if bf16 is None:
        bf16 = cfg.mixed_precision == "bf16" or (cfg.mixed_precision == "auto" and kind.name != "cpu")
    if sparse is None:
        sparse = backend != "xla_fsdp" if cfg.sparse_prediction == "auto" else bool(cfg.sparse_prediction)
    seq_len = cfg.max_tokens + 1
    memory = model_state_bytes(model_config, backend, num_devices, bf16, tensor_parallel)
    memory.update(
        activation_bytes(
            model_config, cfg.batch_size, seq_len, bf16=bf16, attn_implementation=cfg.attn_implementation,
            gradient_checkpointing=cfg.gradient_checkpointing, sparse=sparse, lm_head_fraction=cfg.mlm_probability,
            tensor_parallel=tensor_parallel,
        )
    )
    notes = []
    if memory_limit is None:
        if kind.memory is not None:
            memory_limit = kind.memory
        else:
            memory_limit = host_available_memory() / num_devices
            notes.append("CPU: the limit is the host's available memory shared by the devices")
    elif memory_limit <= 0:
        memory_limit = None
    if backend == "xla_fsdp":
        notes.append("XLA fuses and reuses buffers: activations are usually below this eager-PyTorch estimate")
    tokens_per_step = cfg.batch_size * num_devices * cfg.gradient_accumulation_steps * seq_len
    if kind.flops_key == "cpu":
        import torch

        with torch.random.fork_rng(devices=[]):  # the measurement's random matrices leave the run's seed alone
            peak = measure_cpu_peak_flops()
    else:
        peak = PEAK_FLOPS.get(kind.flops_key)
    return Plan(
        model=cfg.model,
        parameters=parameter_count(model_config),
        device=kind,
        num_devices=num_devices,
        backend=backend,
        tensor_parallel=tensor_parallel,
        bf16=bf16,
        batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        seq_len=seq_len,
        gradient_checkpointing=cfg.gradient_checkpointing,
        attn_implementation=cfg.attn_implementation,
        sparse=sparse,
        memory=memory,
        memory_limit=memory_limit,
        tokens_per_step=tokens_per_step,
        flops_per_token=flops_per_token(model_config, seq_len, cfg.mlm_probability if sparse else 1.0),
        peak_flops=peak,
        mfu=mfu,
        tokens=float(tokens) if tokens else float(cfg.max_steps * tokens_per_step),
        notes=notes,
    )


def plan_for_runtime(cfg: Any, runtime: Any, checkpoint: str | None = None) -> Plan | None:
    """The plan of a starting pretraining run on ``runtime`` (a :class:`genolm.parallel.Runtime`), before
    the model is built. ``checkpoint``: the folder (or Hub id) the weights come from (resume / init_from);
    its ``config.json`` gives the architecture. None when that configuration cannot be read (the model's
    own loading then reports the problem).

    The limit: ``cfg.memory_limit_gib`` (0: none); by default the CUDA device's total memory, the table's
    for TPUs, and on the CPU the host's available memory shared by this host's devices and processes."""
    from ..configuration_genolm import GenoLMConfig

    if checkpoint:
        try:
            model_config = GenoLMConfig.from_pretrained(checkpoint)
        except (OSError, ValueError):
            return None
    else:
        model_config = None  # the preset with its overrides
    name = runtime.device_kind
    kind = DEVICES.get(ALIASES.get(name, name)) if name else None
    if kind is None:
        kind = DeviceKind(name or runtime.device.type, None, name or "")
    limit = cfg.memory_limit_gib * GiB if cfg.memory_limit_gib is not None else None
    if limit is None:
        if runtime.device.type == "cuda":
            import torch

            limit = float(torch.cuda.get_device_properties(runtime.device).total_memory)
        elif kind.name == "cpu":
            limit = host_available_memory() / (runtime.local_devices * local_processes())
        elif kind.memory is not None:
            limit = kind.memory
        else:
            limit = 0  # unknown device: no check
    sparse = runtime.sparse_lm_head if cfg.sparse_prediction == "auto" else bool(cfg.sparse_prediction)
    return plan_pretraining(
        cfg, (kind, runtime.num_devices), model_config=model_config, backend=runtime.backend,
        tensor_parallel=getattr(cfg, "tensor_parallel", 1), bf16=runtime.mixed_precision == "bf16", sparse=sparse,
        memory_limit=limit,
    )


def check_mfu(mfu: float) -> float:
    if not (math.isfinite(mfu) and 0 < mfu <= 1):
        raise ConfigError(f"mfu must be in (0, 1], got {mfu}")
    return mfu


def local_processes() -> int:
    """Processes of this job on this host (torchrun / accelerate set ``LOCAL_WORLD_SIZE``)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)


# ------------------------------------------------------------------------------------------------------
# measurement (for the benchmark and the tests)
# ------------------------------------------------------------------------------------------------------
def measure_training_step(
    model_config: Any,
    batch: int,
    seq_len: int,
    *,
    bf16: bool = False,
    sparse: bool = True,
    gradient_checkpointing: bool = False,
    mlm_probability: float = 0.15,
    seed: int = 0,
) -> dict[str, float]:
    """Peak tensor memory (bytes) of one training step on the CPU, as the recipe runs it in one process:
    forward, loss, backward, gradient clipping, AdamW step, ``zero_grad(set_to_none=True)``.

    The measured step is the second one (the optimizer's moments exist, gradients do not at its start).
    Memory is counted tensor by tensor (``torch.distributed._tools.mem_tracker.MemTracker``: live storages of
    every operator's outputs, the model and the optimizer), not the process's resident size. Returns
    ``{"peak": ..., "static": ...}`` where ``static`` is the parameters' and moments' bytes before the step.
    """
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker

    from ..modeling_genolm import GenoLMForMaskedLM
    from .mlm import mlm_loss_sum
    from .optim import build_optimizer

    torch.manual_seed(seed)
    model = GenoLMForMaskedLM(model_config)
    if gradient_checkpointing:
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    model.train()
    optimizer = build_optimizer(model, 1e-4, 0.1)
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, model_config.vocab_size, (batch, seq_len), generator=generator)
    input_ids[:, 0] = model_config.cls_token_id
    attention_mask = torch.ones_like(input_ids)
    selected = torch.rand(input_ids.shape, generator=generator) < mlm_probability
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            output = model(
                input_ids=input_ids, attention_mask=attention_mask, labels=labels if sparse else None,
                sparse_prediction=sparse,
            )
            loss = mlm_loss_sum(output.logits, labels, sparse=sparse) / selected.sum().clamp(min=1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    static = sum(p.numel() * p.element_size() for p in model.parameters())
    static += sum(
        v.numel() * v.element_size() for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)
    )
    tracker = MemTracker()
    tracker.track_external(model, optimizer)
    with tracker:
        step()
    peak = sum(snapshot["Total"] for snapshot in tracker.get_tracker_snapshot("peak").values())
    return {"peak": float(peak), "static": float(static)}


__all__ = [
    "DEVICES",
    "DeviceKind",
    "Plan",
    "activation_bytes",
    "layer_parameter_count",
    "measure_training_step",
    "model_state_bytes",
    "parameter_count",
    "parse_devices",
    "plan_for_runtime",
    "plan_pretraining",
]
