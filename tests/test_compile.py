"""torch.compile of genolm models: no graph break in the forward pass, compiled and eager numerics agree,
the runtime compiles each layer before wrapping, and the AdamW builder picks the fused kernel."""

from __future__ import annotations

import copy

import pytest
import torch

from genolm import GenoLMConfig, GenoLMForMaskedLM
from genolm.parallel import compile_layers, setup
from genolm.training.optim import build_optimizer, fused_adamw_supported

FAMILIES = {
    "nt_v1": dict(position_embedding_type="absolute", ffn_type="gelu", ffn_bias=True, token_dropout=False),
    "nt_v1_token_dropout": dict(position_embedding_type="absolute", ffn_type="gelu", ffn_bias=True, token_dropout=True),
    "nt_v2": dict(position_embedding_type="rotary", ffn_type="swiglu", ffn_bias=False, token_dropout=False),
}


def _model(family: str) -> GenoLMForMaskedLM:
    torch.manual_seed(0)
    config = GenoLMConfig.from_preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                      **FAMILIES[family])  # fmt: skip
    return GenoLMForMaskedLM(config)


def _batch(mask_token_id: int) -> dict[str, torch.Tensor]:
    """Two rows, the second padded; a few tokens masked and labelled."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 4000, (2, 12), generator=g)
    ids[:, 0] = 3  # <cls>
    attention_mask = torch.ones_like(ids)
    ids[1, 8:], attention_mask[1, 8:] = 1, 0  # <pad>
    labels = torch.full_like(ids, -100)
    labels[:, [2, 5]] = ids[:, [2, 5]]
    ids[:, [2, 5]] = mask_token_id
    return {"input_ids": ids, "attention_mask": attention_mask, "labels": labels}


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_has_no_graph_break(family):
    """The whole masked-LM forward traces to one graph, at inference and in training with labels."""
    model = _model(family)
    batch = _batch(model.config.mask_token_id)
    for training in (False, True):
        model.train(training)
        kwargs = batch if training else {k: batch[k] for k in ("input_ids", "attention_mask")}
        explanation = torch._dynamo.explain(model)(**kwargs)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_layers_match_eager(family):
    """Inductor-compiled layers: logits at inference, and the training loss and gradients, within 1e-4 of the
    eager model with the same weights."""
    eager = _model(family)
    compiled = copy.deepcopy(eager)
    assert compile_layers(compiled) == eager.config.num_hidden_layers
    batch = _batch(eager.config.mask_token_id)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(**inputs).logits, eager.eval()(**inputs).logits, atol=1e-4, rtol=0)
    losses = []
    for model in (eager, compiled):
        model.train()
        loss = model(**batch).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-4, rtol=0)
    for (name, p_eager), p_compiled in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(p_compiled.grad, p_eager.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_runtime_prepare_compiles_each_layer_and_keeps_parameter_names():
    rt = setup("none", mixed_precision="no")
    model = _model("nt_v1")
    names = list(model.state_dict())
    model, optimizer = rt.prepare(model, lambda m: build_optimizer(m, 1e-3, 0.01), compile=True)
    layers = rt.unwrap(model).genolm.encoder.layers
    assert all(layer._compiled_call_impl is not None for layer in layers)
    assert rt.unwrap(model).lm_head._compiled_call_impl is None  # the sparse head stays eager
    assert list(rt.unwrap(model).state_dict()) == names
    assert all(group["fused"] for group in optimizer.param_groups)  # CPU has a fused AdamW kernel
    plain, _ = rt.prepare(_model("nt_v1"), lambda m: build_optimizer(m, 1e-3, 0.01))
    assert all(layer._compiled_call_impl is None for layer in rt.unwrap(plain).genolm.encoder.layers)


def test_fused_adamw_steps_equal_the_for_loop_implementation():
    """build_optimizer's fused AdamW on the CPU updates the weights as torch's single-tensor AdamW does."""
    models = [_model("nt_v2"), _model("nt_v2")]
    assert fused_adamw_supported(list(models[0].parameters()))
    fused = build_optimizer(models[0], 1e-2, 0.1)
    reference = build_optimizer(models[1], 1e-2, 0.1, fused=False)
    for group in reference.param_groups:
        group["foreach"] = False
    batch = _batch(models[0].config.mask_token_id)
    for _ in range(3):
        for model, optimizer in zip(models, (fused, reference)):
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    assert fused.param_groups[0]["fused"] and not reference.param_groups[0]["fused"]
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        if name.endswith("attention.key.bias"):
            # Its exact gradient is 0 (softmax ignores a shift common to all keys): Adam scales rounding
            # noise up to the learning rate, so the two implementations may differ there by ~lr.
            continue
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    assert not fused_adamw_supported([torch.nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False)])
