"""Configuration of genolm models (Nucleotide Transformer v1 / AgroNT and v2 architectures)."""

from __future__ import annotations

import copy
from typing import Any

from transformers import PretrainedConfig

# Published shapes. Sources: the config.json files of the InstaDeepAI checkpoints on the Hugging Face Hub
# (nucleotide-transformer-500m-human-ref, -2.5b-multi-species, -v2-50m-multi-species, -v2-500m-multi-species,
# agro-nucleotide-transformer-1b) and the NT / AgroNT papers (Dalla-Torre et al. 2024, Mendoza-Revilla et al.
# 2024). NT v1 / AgroNT: learned absolute positions, GELU FFN with biases, token dropout rescaling.
# NT v2: rotary positions, SwiGLU FFN without biases, 2048 tokens of context (+ <cls>).
_NT_V1 = dict(
    position_embedding_type="absolute",
    ffn_type="gelu",
    ffn_bias=True,
    vocab_size=4105,
    vocab_layout="nt-v1",
    token_dropout=True,
    mask_token_id=2,
    pad_token_id=1,
    cls_token_id=3,
)
_NT_V2 = dict(
    position_embedding_type="rotary",
    ffn_type="swiglu",
    ffn_bias=False,
    vocab_size=4107,
    vocab_layout="nt-v2",
    token_dropout=False,
    mask_token_id=2,
    pad_token_id=1,
    cls_token_id=3,
    max_position_embeddings=2050,
)

PRESETS: dict[str, dict[str, Any]] = {
    # A test-size model: runs in milliseconds on a CPU.
    "tiny": dict(
        _NT_V1,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=1026,
        token_dropout=False,
    ),
    # InstaDeepAI/agro-nucleotide-transformer-1b (AgroNT): 48 plant genomes, 6 kb context.
    "agront-1b": dict(
        _NT_V1,
        hidden_size=1500,
        num_hidden_layers=40,
        num_attention_heads=20,
        intermediate_size=5120,
        max_position_embeddings=1026,
    ),
    # InstaDeepAI/nucleotide-transformer-500m-human-ref (and -500m-1000g).
    "nt-v1-500m": dict(
        _NT_V1,
        hidden_size=1280,
        num_hidden_layers=24,
        num_attention_heads=20,
        intermediate_size=5120,
        max_position_embeddings=1002,
    ),
    # InstaDeepAI/nucleotide-transformer-2.5b-multi-species (and -2.5b-1000g).
    "nt-v1-2.5b": dict(
        _NT_V1,
        hidden_size=2560,
        num_hidden_layers=32,
        num_attention_heads=40,
        intermediate_size=10240,
        max_position_embeddings=1002,
    ),
    # InstaDeepAI/nucleotide-transformer-v2-50m-multi-species.
    "nt-v2-50m": dict(
        _NT_V2,
        hidden_size=512,
        num_hidden_layers=12,
        num_attention_heads=16,
        intermediate_size=2048,
    ),
    # InstaDeepAI/nucleotide-transformer-v2-500m-multi-species.
    "nt-v2-500m": dict(
        _NT_V2,
        hidden_size=1024,
        num_hidden_layers=29,
        num_attention_heads=16,
        intermediate_size=4096,
    ),
    # Larger NT-v2-style models for pod-scale pretraining (no published checkpoint; shapes chosen by rule).
    # Rules: head_dim 128 (hidden_size = 128 * num_attention_heads, so a multiple of 128 and of the head
    # count, and heads divisible by 8 for tensor parallelism over 8 devices); intermediate_size = 4 x hidden
    # (NT-v2-500m's ratio, 4096 / 1024, with SwiGLU on top: 12 * hidden^2 FFN weights per layer); width /
    # depth between 90 and 110, within the published range of dense transformers of this size (GPT-3 2.7B-13B:
    # 80-128; NT-v1-2.5B: 80; Llama-2 7B/13B/70B: 128/128/102), where Kaplan et al. 2020 (fig. 5) find the loss
    # flat to within ~1 %. Parameter counts (exact, from genolm.training.plan.parameter_count, equal to a
    # meta-device build): genolm-5b 5,018,334,219; genolm-20b 20,202,925,067.
    "genolm-5b": dict(
        _NT_V2,
        hidden_size=3072,
        num_hidden_layers=33,
        num_attention_heads=24,
        intermediate_size=12288,
    ),
    "genolm-20b": dict(
        _NT_V2,
        hidden_size=5120,
        num_hidden_layers=48,
        num_attention_heads=40,
        intermediate_size=20480,
    ),
}


class GenoLMConfig(PretrainedConfig):
    r"""Configuration of a genolm encoder (BERT-style masked language model over k-mer tokens).

    One configuration covers both Nucleotide Transformer families:

    - NT v1 / AgroNT: ``position_embedding_type="absolute"``, ``ffn_type="gelu"``, ``ffn_bias=True``,
      ``token_dropout=True``.
    - NT v2: ``position_embedding_type="rotary"``, ``ffn_type="swiglu"``, ``ffn_bias=False``.

    Args:
        vocab_size: Rows of the token embedding and of the LM head output (4105 for NT v1 / AgroNT, whose
            ``<eos>``/``<bos>`` ids 4105/4106 have no row; 4107 for NT v2).
        hidden_size: Width of the residual stream.
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Attention heads per layer; must divide ``hidden_size``.
        intermediate_size: Inner width of the feed-forward block (for SwiGLU, the width after gating).
        max_position_embeddings: Longest input, in tokens including ``<cls>``. With absolute positions the
            position table has this many rows; ESM numbers positions from ``pad_token_id + 1``, so at most
            ``max_position_embeddings - pad_token_id - 1`` tokens fit.
        position_embedding_type: ``"absolute"`` (learned) or ``"rotary"``.
        rope_theta: Base period of rotary embeddings.
        ffn_type: ``"gelu"`` (dense, GELU, dense) or ``"swiglu"`` (gated SiLU).
        ffn_bias: Whether the feed-forward linear layers have biases.
        hidden_dropout_prob: Dropout on residual branches.
        attention_probs_dropout_prob: Dropout on attention probabilities.
        layer_norm_eps: LayerNorm epsilon (1e-12 in NT checkpoints).
        initializer_range: Standard deviation of the normal initialisation of weights.
        token_dropout: ESM's mask-dropout: ``<mask>`` embeddings are zeroed and the others rescaled by
            ``(1 - 0.15 * 0.8) / (1 - observed mask ratio)``. NT v1 checkpoints were trained with it.
        emb_layer_norm_before: LayerNorm right after the embeddings (False in every NT checkpoint).
        k: Nucleotides per k-mer token (6 for NT and AgroNT; 1 for single-nucleotide models).
        vocab_layout: Token id layout of the matching tokenizer, ``"nt-v1"`` or ``"nt-v2"``.
        mask_token_id, pad_token_id, cls_token_id: Special token ids (the same in both layouts).
        pooling: How sequence-level heads pool token states: ``"cls"`` or ``"mean"`` (over non-padding tokens,
            ``<cls>`` excluded).
        classifier_dropout: Dropout in classification heads (defaults to ``hidden_dropout_prob``).
        per_nucleotide: Token classification predicts each of the ``k`` bases of every token, so a k-mer
            model labels single nucleotides (logits of shape ``(batch, tokens, k, num_labels)``).

    The masked LM's sparse prediction (LM head only at labelled positions) is a forward argument of
    ``GenoLMForMaskedLM`` set by the training loop, not a configuration field; a ``sparse_prediction`` key in
    an older ``config.json`` is ignored.
    """

    model_type = "genolm"

    def __init__(
        self,
        vocab_size: int = 4105,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        max_position_embeddings: int = 1026,
        position_embedding_type: str = "absolute",
        rope_theta: float = 10000.0,
        ffn_type: str = "gelu",
        ffn_bias: bool = True,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        token_dropout: bool = False,
        emb_layer_norm_before: bool = False,
        k: int = 6,
        vocab_layout: str = "nt-v1",
        mask_token_id: int = 2,
        pad_token_id: int = 1,
        cls_token_id: int = 3,
        pooling: str = "cls",
        classifier_dropout: float | None = None,
        per_nucleotide: bool = False,
        **kwargs: Any,
    ):
        # Older checkpoints persisted the pretraining loop's sparse LM-head switch; it is a runtime choice.
        kwargs.pop("sparse_prediction", None)
        # NT's published configs carry no <eos>; ESM's default eos_token_id (2) would collide with <mask>.
        kwargs.setdefault("eos_token_id", None)
        kwargs.setdefault("bos_token_id", None)
        kwargs.setdefault("tie_word_embeddings", False)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.position_embedding_type = position_embedding_type
        self.rope_theta = rope_theta
        self.ffn_type = ffn_type
        self.ffn_bias = ffn_bias
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.token_dropout = token_dropout
        self.emb_layer_norm_before = emb_layer_norm_before
        self.k = k
        self.vocab_layout = vocab_layout
        self.mask_token_id = mask_token_id
        self.cls_token_id = cls_token_id
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        self.per_nucleotide = per_nucleotide
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.validate_architecture()

    def validate_architecture(self) -> None:
        """Raise ``ValueError`` on contradictory options (called at construction)."""
        choices = {
            "position_embedding_type": ("absolute", "rotary"),
            "ffn_type": ("gelu", "swiglu"),
            "vocab_layout": ("nt-v1", "nt-v2"),
            "pooling": ("cls", "mean"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"GenoLMConfig.{name}={getattr(self, name)!r}; expected one of {allowed}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.position_embedding_type == "rotary" and (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError("rotary positions need an even head size (hidden_size / num_attention_heads)")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        for name in ("mask_token_id", "pad_token_id", "cls_token_id"):
            token_id = getattr(self, name)
            if token_id is not None and not 0 <= token_id < self.vocab_size:
                raise ValueError(f"{name}={token_id} is outside the vocabulary (vocab_size={self.vocab_size})")
        if self.max_position_embeddings < 2:
            raise ValueError("max_position_embeddings must be at least 2")

    @property
    def max_tokens(self) -> int:
        """Longest input in tokens (``<cls>`` included) that the position scheme supports."""
        if self.position_embedding_type == "absolute":
            # ESM numbers positions from pad_token_id + 1 (fairseq's make_positions).
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GenoLMConfig:
        """Build the configuration of a published shape (see ``PRESETS``), with optional overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
        kwargs = copy.deepcopy(PRESETS[name])
        kwargs.update(overrides)
        return cls(**kwargs)


__all__ = ["GenoLMConfig", "PRESETS"]
