"""A model tester in the spirit of transformers' ``ModelTesterMixin``: every head class on three tiny
configurations (NT v1, NT v1 with token dropout, NT v2 rotary + SwiGLU).

Properties checked on every (configuration, head) pair: save / load, batching equivalence, padding invariance,
eager vs SDPA attention, gradient checkpointing, hidden states and attentions, ``inputs_embeds``,
``resize_token_embeddings``. The NT v1 configurations are also compared output for output with transformers'
ESM classes on the same weights (converted with ``genolm.convert``); ESM has no SwiGLU, so NT v2 is checked
on genolm's own properties. Sequence and token heads' losses are compared with a direct computation.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from genolm import (
    GenoLMConfig,
    GenoLMForMaskedLM,
    GenoLMForSequenceClassification,
    GenoLMForTokenClassification,
    GenoLMModel,
)
from genolm.convert import esm_config_from_genolm, genolm_key_to_esm

SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, num_labels=3)
CONFIGS = {
    "nt-v1": dict(position_embedding_type="absolute", ffn_type="gelu", ffn_bias=True, token_dropout=False,
                  vocab_size=4105, vocab_layout="nt-v1", max_position_embeddings=66),
    "nt-v1-token-dropout": dict(position_embedding_type="absolute", ffn_type="gelu", ffn_bias=True,
                                token_dropout=True, vocab_size=4105, vocab_layout="nt-v1",
                                max_position_embeddings=66),
    "nt-v2": dict(position_embedding_type="rotary", ffn_type="swiglu", ffn_bias=False, token_dropout=False,
                  vocab_size=4107, vocab_layout="nt-v2", max_position_embeddings=66),
}
HEADS = [GenoLMModel, GenoLMForMaskedLM, GenoLMForSequenceClassification, GenoLMForTokenClassification]
ATOL = 2e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def make_config(name: str, **overrides) -> GenoLMConfig:
    return GenoLMConfig(**{**SHAPE, **CONFIGS[name], **overrides})


def make_model(name: str, head, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return head(make_config(name, **overrides)).eval()


def make_batch(config: GenoLMConfig, rows: int = 3, tokens: int = 20, with_mask_token: bool = True):
    """Random k-mer ids with <cls> first; row i is padded after ``tokens - 5 * i`` tokens; one <mask> in row 0."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(6, 4100, (rows, tokens), generator=generator)
    input_ids[:, 0] = config.cls_token_id
    attention_mask = torch.ones_like(input_ids)
    for row in range(rows):
        input_ids[row, tokens - 5 * row :] = config.pad_token_id
        attention_mask[row, tokens - 5 * row :] = 0
    if with_mask_token:
        input_ids[0, 3] = config.mask_token_id
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def main_output(model, output) -> torch.Tensor:
    """The head's result: ``last_hidden_state`` for the bare encoder, logits otherwise."""
    return output.last_hidden_state if isinstance(model, GenoLMModel) else output.logits


def token_level(model) -> bool:
    return not isinstance(model, GenoLMForSequenceClassification)


def assert_close_on_tokens(model, a: torch.Tensor, b: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """Compare outputs at real tokens (token-level heads) or whole (sequence heads)."""
    if token_level(model):
        a, b = a[attention_mask.bool()], b[attention_mask.bool()]
    torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


PAIRS = [pytest.param(name, head, id=f"{name}-{head.__name__}") for name in CONFIGS for head in HEADS]
ESM_PAIRS = [p for p in PAIRS if p.values[0] != "nt-v2"]


# ----------------------------------------------------------------------------------------------------------
# genolm's own properties, every configuration and head
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, head", PAIRS)
def test_save_and_load(tmp_path, name, head):
    model = make_model(name, head)
    batch = make_batch(model.config)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "sparse_prediction" not in saved
    reloaded = head.from_pretrained(tmp_path).eval()
    assert reloaded.config.to_diff_dict() == model.config.to_diff_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    with torch.no_grad():
        torch.testing.assert_close(main_output(model, model(**batch)), main_output(reloaded, reloaded(**batch)))


@pytest.mark.parametrize("name, head", PAIRS)
def test_batching_equivalence_and_padding_invariance(name, head):
    """Each row alone, without its padding, gives the row's output in the padded batch; more padding
    changes nothing either."""
    model = make_model(name, head)
    batch = make_batch(model.config)
    with torch.no_grad():
        batched = main_output(model, model(**batch))
        for row in range(batch["input_ids"].shape[0]):
            length = int(batch["attention_mask"][row].sum())
            alone = main_output(model, model(input_ids=batch["input_ids"][row : row + 1, :length]))
            if token_level(model):
                torch.testing.assert_close(batched[row, :length], alone[0], rtol=0, atol=ATOL)
            else:
                torch.testing.assert_close(batched[row], alone[0], rtol=0, atol=ATOL)
        extra = 7
        padded = {
            "input_ids": F.pad(batch["input_ids"], (0, extra), value=model.config.pad_token_id),
            "attention_mask": F.pad(batch["attention_mask"], (0, extra), value=0),
        }
        more = main_output(model, model(**padded))
    if token_level(model):
        more = more[:, : batch["input_ids"].shape[1]]
    assert_close_on_tokens(model, batched, more, batch["attention_mask"])


@pytest.mark.parametrize("name, head", PAIRS)
def test_eager_and_sdpa_agree(tmp_path, name, head):
    make_model(name, head).save_pretrained(tmp_path)
    eager = head.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = head.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert (eager.config._attn_implementation, sdpa.config._attn_implementation) == ("eager", "sdpa")
    batch = make_batch(eager.config)
    with torch.no_grad():
        a, b = main_output(eager, eager(**batch)), main_output(sdpa, sdpa(**batch))
    assert_close_on_tokens(eager, a, b, batch["attention_mask"])


@pytest.mark.parametrize("name, head", PAIRS)
def test_gradient_checkpointing_gives_the_same_gradients(name, head):
    batch = make_batch(make_config(name))
    grads = []
    for checkpointing in (False, True):
        model = make_model(name, head).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert model.is_gradient_checkpointing
        main_output(model, model(**batch)).float().pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for key in grads[0]:
        torch.testing.assert_close(grads[0][key], grads[1][key], rtol=1e-5, atol=1e-7, msg=key)


@pytest.mark.parametrize("name, head", PAIRS)
def test_hidden_states_and_attentions(name, head):
    """ESM's contract: embedding output + one state per layer, the last after the final LayerNorm (equal to
    the encoder's ``last_hidden_state``); attention weights per layer, also when the model runs SDPA."""
    model = make_model(name, head)
    assert model.config._attn_implementation == "sdpa"
    batch = make_batch(model.config)
    config = model.config
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True, output_attentions=True)
        encoder = model if isinstance(model, GenoLMModel) else model.genolm
        last = encoder(**batch, output_attentions=True).last_hidden_state  # the same (eager) kernel
    assert len(output.hidden_states) == config.num_hidden_layers + 1
    torch.testing.assert_close(output.hidden_states[-1], last, rtol=0, atol=0)
    assert len(output.attentions) == config.num_hidden_layers
    rows, tokens = batch["input_ids"].shape
    for weights in output.attentions:
        assert weights.shape == (rows, config.num_attention_heads, tokens, tokens)
        torch.testing.assert_close(weights.sum(-1), torch.ones(rows, config.num_attention_heads, tokens))
        padded_keys = ~batch["attention_mask"].bool()[:, None, None, :].expand_as(weights)
        assert weights[padded_keys].abs().max() == 0
    tuple_output = model(**batch, output_hidden_states=True, output_attentions=True, return_dict=False)
    assert any(isinstance(item, tuple) and len(item) == config.num_hidden_layers for item in tuple_output)


@pytest.mark.parametrize("name, head", PAIRS)
def test_inputs_embeds_match_input_ids(name, head):
    model = make_model(name, head)
    batch = make_batch(model.config, with_mask_token=False)
    embeds = model.get_input_embeddings()(batch["input_ids"])
    with torch.no_grad():
        from_ids = main_output(model, model(**batch))
        from_embeds = main_output(model, model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]))
    assert_close_on_tokens(model, from_ids, from_embeds, batch["attention_mask"])
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(input_ids=batch["input_ids"], inputs_embeds=embeds)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(attention_mask=batch["attention_mask"])


@pytest.mark.parametrize("name, head", PAIRS)
def test_resize_token_embeddings(name, head):
    model = make_model(name, head)
    batch = make_batch(model.config)
    old_vocab = model.config.vocab_size
    with torch.no_grad():
        before = main_output(model, model(**batch))
    model.resize_token_embeddings(old_vocab + 9)
    assert model.config.vocab_size == old_vocab + 9
    assert model.get_input_embeddings().weight.shape[0] == old_vocab + 9
    with torch.no_grad():
        after = main_output(model, model(**batch))
        new_ids = batch["input_ids"].clone()
        new_ids[:, 1] = old_vocab + 8  # a token that exists only after the resize
        main_output(model, model(input_ids=new_ids, attention_mask=batch["attention_mask"]))
    if isinstance(model, GenoLMForMaskedLM):
        assert model.lm_head.bias.shape == (old_vocab + 9,)
        assert after.shape[-1] == old_vocab + 9
        after = after[..., :old_vocab]  # the old tokens' logits are untouched
    assert_close_on_tokens(model, before, after, batch["attention_mask"])
    model.resize_token_embeddings(old_vocab - 5)
    with torch.no_grad():
        shrunk = main_output(model, model(**{**batch, "input_ids": batch["input_ids"].clamp(max=old_vocab - 6)}))
    if isinstance(model, GenoLMForMaskedLM):
        assert shrunk.shape[-1] == old_vocab - 5 and model.lm_head.bias.shape == (old_vocab - 5,)


# ----------------------------------------------------------------------------------------------------------
# the same outputs as transformers' ESM classes on converted weights (NT v1 configurations)
# ----------------------------------------------------------------------------------------------------------
def esm_twin(model):
    """transformers' ESM class with ``model``'s weights (``genolm.convert`` names), eager attention."""
    from transformers import EsmForMaskedLM, EsmForSequenceClassification, EsmForTokenClassification, EsmModel

    esm_config = esm_config_from_genolm(model.config)
    esm_config._attn_implementation = "eager"
    if isinstance(model, GenoLMModel):
        esm = EsmModel(esm_config, add_pooling_layer=False)
    else:
        esm_class = {
            GenoLMForMaskedLM: EsmForMaskedLM,
            GenoLMForSequenceClassification: EsmForSequenceClassification,
            GenoLMForTokenClassification: EsmForTokenClassification,
        }[type(model)]
        esm = esm_class(esm_config)
    missing, unexpected = esm.load_state_dict(
        {genolm_key_to_esm(k): v for k, v in model.state_dict().items()}, strict=False
    )
    assert not unexpected and all("contact_head" in k for k in missing), (missing, unexpected)
    return esm.eval()


@pytest.mark.parametrize("name, head", ESM_PAIRS)
def test_outputs_equal_transformers_esm(name, head):
    model = make_model(name, head)
    esm = esm_twin(model)
    batch = make_batch(model.config)
    kwargs = dict(output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        ours, theirs = model(**batch, **kwargs), esm(**batch, **kwargs)
    assert_close_on_tokens(model, main_output(model, ours), main_output(model, theirs), batch["attention_mask"])
    keep = batch["attention_mask"].bool()
    assert len(ours.hidden_states) == len(theirs.hidden_states) == model.config.num_hidden_layers + 1
    for i, (a, b) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
        torch.testing.assert_close(a[keep], b[keep], rtol=0, atol=ATOL, msg=f"hidden_states[{i}]")
    assert len(ours.attentions) == len(theirs.attentions) == model.config.num_hidden_layers
    for i, (a, b) in enumerate(zip(ours.attentions, theirs.attentions)):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL, msg=f"attentions[{i}]")


@pytest.mark.parametrize("name", ["nt-v1", "nt-v1-token-dropout"])
def test_masked_lm_loss_equals_transformers_esm(name):
    model = make_model(name, GenoLMForMaskedLM)
    esm = esm_twin(model)
    batch = make_batch(model.config)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 2:6] = batch["input_ids"][:, 2:6]
    with torch.no_grad():
        ours, theirs = model(**batch, labels=labels), esm(**batch, labels=labels)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# heads' losses against a direct computation
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "problem_type, num_labels, make_labels, reference",
    [
        ("single_label_classification", 3, lambda g: torch.randint(0, 3, (3,), generator=g),
         lambda logits, labels: F.cross_entropy(logits, labels)),
        ("multi_label_classification", 3, lambda g: torch.randint(0, 2, (3, 3), generator=g).float(),
         lambda logits, labels: F.binary_cross_entropy_with_logits(logits, labels)),
        ("regression", 1, lambda g: torch.randn(3, generator=g),
         lambda logits, labels: F.mse_loss(logits.squeeze(-1), labels)),
        ("regression", 3, lambda g: torch.randn(3, 3, generator=g),
         lambda logits, labels: F.mse_loss(logits, labels)),
    ],
)
def test_sequence_classification_problem_types(problem_type, num_labels, make_labels, reference):
    labels = make_labels(torch.Generator().manual_seed(2))
    for explicit in (True, False):
        if not explicit and problem_type == "regression" and num_labels > 1:
            continue  # float labels with several outputs are inferred as multi-label, as in transformers
        overrides = {"problem_type": problem_type} if explicit else {}
        model = make_model("nt-v1", GenoLMForSequenceClassification, num_labels=num_labels, **overrides)
        batch = make_batch(model.config)
        with torch.no_grad():
            output = model(**batch, labels=labels)
        assert model.config.problem_type == problem_type
        torch.testing.assert_close(output.loss, reference(output.logits, labels))


def test_token_classification_loss_ignores_unlabelled_positions():
    model = make_model("nt-v1-token-dropout", GenoLMForTokenClassification)
    batch = make_batch(model.config)
    labels = torch.randint(0, 3, batch["input_ids"].shape, generator=torch.Generator().manual_seed(3))
    labels[~batch["attention_mask"].bool()] = -100
    labels[:, 0] = -100
    with torch.no_grad():
        output = model(**batch, labels=labels)
    keep = labels != -100
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits[keep], labels[keep]))


# ----------------------------------------------------------------------------------------------------------
# torch.compile
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_torch_compile_matches_eager(name):
    model = make_model(name, GenoLMForMaskedLM)
    batch = make_batch(model.config)
    compiled = torch.compile(model, backend="inductor", dynamic=False)
    with torch.no_grad():
        expected = model(**batch).logits
        got = compiled(**batch).logits
    assert_close_on_tokens(model, expected, got, batch["attention_mask"])
