"""PyTorch genolm model: a BERT-style encoder over k-mer tokens covering Nucleotide Transformer v1 / AgroNT
(learned absolute positions, GELU feed-forward) and Nucleotide Transformer v2 (rotary positions, SwiGLU).

The file reads top to bottom in the order of ``transformers``' ``modeling_esm.py``: helpers, embeddings,
attention, feed-forward, layer, encoder, the ``PreTrainedModel`` base, the bare model, then one class per
head. The numerics follow ESM (the format NT and AgroNT checkpoints are published in) step by step, so
converted checkpoints give the same logits; each place where that matters carries a comment.

The forward pass is free of device code, host syncs (``.item()``) and data-dependent branches, so it traces
to one static graph under torch-xla (the only exception, the masked LM's ``sparse_prediction`` argument, is
opt-in).

Outputs follow ``transformers``' ESM classes: ``hidden_states`` holds the embedding output and every layer's
output, the last one after the final LayerNorm (so ``hidden_states[-1]`` equals ``last_hidden_state``, the
Nucleotide Transformer embedding recipe); ``output_attentions=True`` returns each layer's attention weights
(computed by the eager kernel for that call, also when the model runs SDPA, which cannot return weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from .configuration_genolm import GenoLMConfig

# ESM's mask-dropout constant: the fraction of tokens replaced by <mask> during ESM/NT training (15 % x 80 %).
MASK_RATIO_TRAIN = 0.15 * 0.8


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, as in ESM (``x * 0.5 * (1 + erf(x / sqrt(2)))``); the tanh approximation gives slightly
    different logits. PyTorch's fused kernel computes the same function and keeps only ``x`` for the backward
    pass, where the written-out formula keeps three intermediates."""
    return F.gelu(x)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of the last dimension: ``(x1, x2) -> (-x2, x1)``."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of ``x`` (batch, heads, tokens, head_dim), computed in fp32 as in ESM: ``x``
    and the tables (fp32 from :class:`GenoLMRotaryEmbedding`) are rotated in fp32, the result cast to
    ``x.dtype``."""
    rotated = x.float() * cos.float() + rotate_half(x.float()) * sin.float()
    return rotated.to(x.dtype)


def position_ids_from_input_ids(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """ESM/fairseq position numbering: non-pad tokens count from ``padding_idx + 1``; pads get ``padding_idx``.

    ``input_ids`` (batch, tokens) -> (batch, tokens). A cumulative sum, so no host sync and XLA-friendly.
    """
    return position_ids_from_mask(input_ids.ne(padding_idx), padding_idx)


def position_ids_from_mask(attention_mask: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """The same numbering from a (batch, tokens) mask that is 1/True on real tokens (for ``inputs_embeds``)."""
    mask = attention_mask.int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx


def eager_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention. ``query`` is already scaled by ``head_dim ** -0.5`` (ESM's order).

    Shapes: query/key/value (batch, heads, tokens, head_dim); ``attention_mask`` boolean (batch, 1, 1, tokens),
    True where a key may be attended. Returns the output (batch, heads, tokens, head_dim) and the weights.
    """
    scores = torch.matmul(query, key.transpose(-1, -2))
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout)
    return torch.matmul(weights, value), weights


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float,
) -> tuple[torch.Tensor, None]:
    """Same contract as :func:`eager_attention` through ``F.scaled_dot_product_attention`` (fused kernels)."""
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=1.0)
    return out, None


ATTENTION_FUNCTIONS = {"eager": eager_attention, "sdpa": sdpa_attention}


def attention_function(implementation: str | None, output_attentions: bool = False):
    """The attention kernel for ``config._attn_implementation`` (None means SDPA). ``output_attentions``
    selects the eager kernel for the call, since only it returns the weights. Anything else raises
    ``ValueError`` naming the supported implementations."""
    implementation = implementation or "sdpa"
    if implementation not in ATTENTION_FUNCTIONS:
        raise ValueError(
            f"attn_implementation={implementation!r} is not supported by genolm models; "
            f"expected one of {sorted(ATTENTION_FUNCTIONS)}"
        )
    return eager_attention if output_attentions else ATTENTION_FUNCTIONS[implementation]


class GenoLMEmbeddings(nn.Module):
    """Token embeddings, ESM's mask-dropout rescaling, and learned absolute positions (NT v1 / AgroNT)."""

    def __init__(self, config: GenoLMConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = None
        if config.position_embedding_type == "absolute":
            self.position_embeddings = nn.Embedding(
                config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
            )
        self.layer_norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.emb_layer_norm_before else None
        )
        self.padding_idx = config.pad_token_id
        self.mask_token_id = config.mask_token_id
        self.token_dropout = config.token_dropout

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``input_ids``, ``attention_mask`` (batch, tokens) -> embeddings (batch, tokens, hidden).

        ``inputs_embeds`` (batch, tokens, hidden) replaces the token lookup (as in BERT); positions, the
        mask-dropout scale and padding still apply. Without ids no token is known to be ``<mask>``, so the scale
        is the one of a sample without masks: ``model(inputs_embeds=word_embeddings(ids))`` equals
        ``model(ids)`` for ids without ``<mask>``.
        """
        embeddings = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if self.token_dropout:
            # ESM treats <mask> as dropped-out input: zero it, and rescale the rest by the ratio of unmasked tokens
            # seen in training to unmasked tokens in this sample (1 at inference without masks -> 0.88 scale).
            if input_ids is not None:
                is_mask = input_ids == self.mask_token_id
                embeddings = embeddings.masked_fill(is_mask.unsqueeze(-1), 0.0)
                observed = is_mask.sum(-1).float() / attention_mask.sum(-1).float()
            else:
                observed = torch.zeros(embeddings.shape[0], device=embeddings.device)
            embeddings = (embeddings * (1 - MASK_RATIO_TRAIN) / (1 - observed)[:, None, None]).to(embeddings.dtype)
        if self.position_embeddings is not None:
            if position_ids is None:
                if input_ids is not None:
                    position_ids = position_ids_from_input_ids(input_ids, self.padding_idx)
                else:
                    position_ids = position_ids_from_mask(attention_mask, self.padding_idx)
            embeddings = embeddings + self.position_embeddings(position_ids)
        if self.layer_norm is not None:
            embeddings = self.layer_norm(embeddings)
        # ESM zeroes padding positions of the embedding output.
        return (embeddings * attention_mask.unsqueeze(-1)).to(embeddings.dtype)


class GenoLMRotaryEmbedding(nn.Module):
    """Rotary position tables (NT v2): cos/sin of shape (1, 1, tokens, head_dim)."""

    def __init__(self, config: GenoLMConfig):
        super().__init__()
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.theta = config.rope_theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> torch.Tensor:
        return 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float) / self.head_dim))

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(position_ids.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[:, None], emb.sin()[:, None]


class GenoLMAttention(nn.Module):
    """Multi-head self-attention with biases on every projection (as in all NT checkpoints)."""

    def __init__(self, config: GenoLMConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, tokens, _ = hidden_states.shape
        shape = (batch, tokens, -1, self.head_dim)  # -1: the local heads under tensor parallelism
        query = self.query(hidden_states).view(shape).transpose(1, 2)
        key = self.key(hidden_states).view(shape).transpose(1, 2)
        value = self.value(hidden_states).view(shape).transpose(1, 2)
        # ESM scales the query before the rotary embedding; equal in exact arithmetic, kept for identical logits.
        query = query * self.head_dim**-0.5
        if rotary is not None:
            cos, sin = rotary
            query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)
        attend = attention_function(self.config._attn_implementation, output_attentions)
        out, weights = attend(query, key, value, attention_mask, self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, tokens, -1)
        return self.output(out), weights


class GenoLMFeedForward(nn.Module):
    """Position-wise feed-forward: GELU MLP (NT v1 / AgroNT) or SwiGLU (NT v2, ``silu(a) * b``)."""

    def __init__(self, config: GenoLMConfig):
        super().__init__()
        self.gated = config.ffn_type == "swiglu"
        up_size = 2 * config.intermediate_size if self.gated else config.intermediate_size
        self.up = nn.Linear(config.hidden_size, up_size, bias=config.ffn_bias)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.ffn_bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.up(hidden_states)
        if self.gated:
            gate, linear = hidden_states.chunk(2, dim=-1)
            hidden_states = F.silu(gate) * linear
        else:
            hidden_states = gelu(hidden_states)
        return self.down(hidden_states)


class GenoLMLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer layer: ``x + attn(norm(x))`` then ``x + ffn(norm(x))``. The FSDP wrap unit."""

    def __init__(self, config: GenoLMConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = GenoLMAttention(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = GenoLMFeedForward(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, weights = self.attention(self.attention_norm(hidden_states), attention_mask, rotary, output_attentions)
        hidden_states = hidden_states + self.dropout(attn_out)
        hidden_states = hidden_states + self.dropout(self.ffn(self.ffn_norm(hidden_states)))
        return hidden_states, weights


class GenoLMEncoder(nn.Module):
    """The stack of layers and the final LayerNorm (ESM's ``emb_layer_norm_after``).

    ``hidden_states`` (when asked for) are the embedding output, then each layer's output, the last one after
    the final LayerNorm, as in ESM: ``hidden_states[-1]`` is ``last_hidden_state``.
    """

    def __init__(self, config: GenoLMConfig):
        super().__init__()
        self.layers = nn.ModuleList([GenoLMLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        all_hidden = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden = all_hidden + (hidden_states,)
            hidden_states, weights = layer(hidden_states, attention_mask, rotary, output_attentions)
            if output_attentions:
                all_attentions = all_attentions + (weights,)
        hidden_states = self.final_norm(hidden_states)
        if output_hidden_states:
            all_hidden = all_hidden + (hidden_states,)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_hidden, attentions=all_attentions)


class GenoLMPreTrainedModel(PreTrainedModel):
    """Base class: weight init, checkpoint I/O and the contract that Accelerate and FSDP rely on."""

    config_class = GenoLMConfig
    config: GenoLMConfig
    base_model_prefix = "genolm"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    # FSDP auto-wrap (Accelerate's TRANSFORMER_BASED_WRAP) and device_map="auto" take layers as whole units.
    _no_split_modules = ["GenoLMLayer"]
    _supports_sdpa = True
    _keys_to_ignore_on_load_unexpected = [r"rotary\.inv_freq"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.from_pretrained``; a sharded training checkpoint without consolidated weights is
        refused with a message that says how to export it."""
        folder = Path(str(pretrained_model_name_or_path))
        weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
        if (folder / "dcp").is_dir() and not any((folder / name).exists() for name in weights):
            from .errors import InputDataError

            raise InputDataError(
                f"{folder} is a sharded training checkpoint (dcp/) without consolidated weights: export it with "
                f"`genolm export {folder} OUTPUT_DIR`, then load OUTPUT_DIR"
            )
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) for linear and embedding weights, zero biases, unit LayerNorms (the
        generic init), plus what it cannot know: the LM head's free-standing bias and the rotary table."""
        super()._init_weights(module)
        if isinstance(module, GenoLMLMHead):
            init.zeros_(module.bias)
        elif isinstance(module, GenoLMRotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq())


class GenoLMModel(GenoLMPreTrainedModel):
    """The bare encoder: token ids -> contextual token states (batch, tokens, hidden)."""

    def __init__(self, config: GenoLMConfig):
        super().__init__(config)
        self.embeddings = GenoLMEmbeddings(config)
        self.rotary = GenoLMRotaryEmbedding(config) if config.position_embedding_type == "rotary" else None
        self.encoder = GenoLMEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutput | tuple:
        """``input_ids`` (batch, tokens), or ``inputs_embeds`` (batch, tokens, hidden) in place of the token
        lookup; ``attention_mask`` (batch, tokens), 1 for real tokens, 0 for padding (default: ids that are not
        ``<pad>``, or all tokens with ``inputs_embeds``).

        Returns ``last_hidden_state`` (batch, tokens, hidden); with ``output_hidden_states``, ``hidden_states``
        holds the embedding output and each layer's output, the last after the final LayerNorm (equal to
        ``last_hidden_state``, as in ESM); with ``output_attentions``, each layer's attention weights
        (batch, heads, tokens, tokens), computed by the eager kernel for that call.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        reference = input_ids if input_ids is not None else inputs_embeds
        if attention_mask is None:
            if input_ids is not None:
                attention_mask = input_ids.ne(self.config.pad_token_id)
            else:
                attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        attention_mask = attention_mask.to(reference.device)
        hidden_states = self.embeddings(input_ids, attention_mask, position_ids, inputs_embeds)
        rotary = None
        if self.rotary is not None:
            if position_ids is None:
                position_ids = torch.arange(reference.shape[1], device=reference.device)[None]
            rotary = self.rotary(position_ids)  # fp32 tables; apply_rotary casts after rotating
        key_mask = attention_mask.bool()[:, None, None, :]
        outputs = self.encoder(hidden_states, key_mask, rotary, output_attentions, output_hidden_states)
        if return_dict is False:
            return outputs.to_tuple()
        return outputs


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, method: str) -> torch.Tensor:
    """Sequence embedding from token states (batch, tokens, hidden) -> (batch, hidden).

    ``"cls"`` takes the ``<cls>`` state; ``"mean"`` averages the other non-padding tokens.
    """
    if method == "cls":
        return hidden_states[:, 0]
    if attention_mask is None:
        weights = torch.ones(hidden_states.shape[:2], device=hidden_states.device, dtype=hidden_states.dtype)
    else:
        weights = attention_mask.to(hidden_states.dtype)
    weights = weights.clone()
    weights[:, 0] = 0  # leave out <cls>
    summed = (hidden_states * weights.unsqueeze(-1)).sum(1)
    return summed / weights.sum(1, keepdim=True).clamp(min=1)


class GenoLMLMHead(nn.Module):
    """RoBERTa/ESM masked-LM head: dense, GELU, LayerNorm, untied decoder with a separate bias."""

    def __init__(self, config: GenoLMConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.layer_norm(gelu(self.dense(hidden_states)))
        return self.decoder(hidden_states) + self.bias


class GenoLMForMaskedLM(GenoLMPreTrainedModel):
    """Encoder with the masked-language-model head (pretraining, fill-mask, zero-shot variant scoring)."""

    def __init__(self, config: GenoLMConfig):
        super().__init__(config)
        self.genolm = GenoLMModel(config)
        self.lm_head = GenoLMLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """transformers' resize of the input embeddings and the decoder, plus the LM head's free-standing bias
        (rows kept; new rows get the old bias mean with ``mean_resizing``, else zero)."""
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        old_bias = self.lm_head.bias
        new_size = embeddings.num_embeddings
        if old_bias.shape[0] != new_size:
            with torch.no_grad():
                bias = old_bias.new_zeros(new_size)
                kept = min(new_size, old_bias.shape[0])
                bias[:kept] = old_bias[:kept]
                if mean_resizing and new_size > kept:
                    bias[kept:] = old_bias.mean()
            self.lm_head.bias = nn.Parameter(bias, requires_grad=old_bias.requires_grad)
        return embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        sparse_prediction: bool = False,
        **kwargs,
    ) -> MaskedLMOutput | tuple:
        """``labels`` (batch, tokens): target ids at masked positions, -100 elsewhere. The loss is a mean
        cross-entropy computed in fp32. Logits are (batch, tokens, vocab).

        ``sparse_prediction`` (a switch of the training loop, never part of the configuration): with labels,
        project to the vocabulary only at labelled positions, which saves most of the LM head's compute in
        pretraining; logits are then (n_labelled, vocab) in the row-major order of ``labels != -100``. Leave
        it off under XLA, where the data-dependent shape recompiles the graph."""
        outputs = self.genolm(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        hidden_states = outputs.last_hidden_state
        if labels is not None and sparse_prediction:
            # Project only the labelled (~15 %) positions to the 4k-way vocabulary (data-dependent shape).
            selected = labels != -100
            hidden_states, labels = hidden_states[selected], labels[selected]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1).to(logits.device))
        output = MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output.to_tuple() if return_dict is False else output


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor, config: GenoLMConfig) -> torch.Tensor:
    """Loss by ``config.problem_type`` (inferred as in transformers when unset), in fp32."""
    num_labels = logits.shape[-1]
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    logits = logits.float()
    if config.problem_type == "regression":
        return F.mse_loss(logits.view(labels.shape) if num_labels == 1 else logits, labels.float())
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1).long())
    return F.binary_cross_entropy_with_logits(logits, labels.float())


class GenoLMClassificationHead(nn.Module):
    """ESM's sentence-level head on a pooled state: dropout, dense, tanh, dropout, projection."""

    def __init__(self, config: GenoLMConfig):
        super().__init__()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.dense(self.dropout(pooled)))
        return self.out_proj(self.dropout(hidden))


class GenoLMForSequenceClassification(GenoLMPreTrainedModel):
    """Sequence-level classification / regression / multi-label head (``config.problem_type``,
    ``config.num_labels``), pooling by ``config.pooling`` (``cls`` or padding-aware ``mean``)."""

    def __init__(self, config: GenoLMConfig):
        super().__init__(config)
        self.genolm = GenoLMModel(config)
        self.classifier = GenoLMClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        """``labels``: (batch,) class ids, (batch,) or (batch, n) floats for regression, (batch, n) 0/1 floats
        for multi-label. Logits (batch, num_labels)."""
        outputs = self.genolm(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        pooled = pool(outputs.last_hidden_state, attention_mask, self.config.pooling)
        logits = self.classifier(pooled)
        loss = sequence_loss(logits, labels.to(logits.device), self.config) if labels is not None else None
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output.to_tuple() if return_dict is False else output


class GenoLMForTokenClassification(GenoLMPreTrainedModel):
    """Per-token classification, or with ``config.per_nucleotide`` one prediction for each of the ``k``
    nucleotides of every token (genome annotation at base resolution)."""

    def __init__(self, config: GenoLMConfig):
        super().__init__(config)
        self.genolm = GenoLMModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        outputs_per_token = config.k * config.num_labels if config.per_nucleotide else config.num_labels
        self.classifier = nn.Linear(config.hidden_size, outputs_per_token)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput | tuple:
        """Logits (batch, tokens, num_labels), or (batch, tokens, k, num_labels) per nucleotide. ``labels`` has
        the logits' shape without the last dimension; -100 marks positions without a label (``<cls>``, padding,
        the missing bases of a short single-nucleotide token)."""
        outputs = self.genolm(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        if self.config.per_nucleotide:
            logits = logits.view(*logits.shape[:2], self.config.k, self.config.num_labels)
        loss = None
        if labels is not None:
            flat = logits.float().reshape(-1, self.config.num_labels)
            loss = F.cross_entropy(flat, labels.to(logits.device).reshape(-1).long(), ignore_index=-100)
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output.to_tuple() if return_dict is False else output


__all__ = [
    "GenoLMForMaskedLM",
    "GenoLMForSequenceClassification",
    "GenoLMForTokenClassification",
    "GenoLMModel",
    "GenoLMPreTrainedModel",
]
