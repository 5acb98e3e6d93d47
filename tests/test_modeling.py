"""Model classes: presets, Auto* registration, save/reload, attention backends, padding, heads."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    EsmConfig,
    EsmForMaskedLM,
    pipeline,
)

from genolm import (
    PRESETS,
    GenoLMConfig,
    GenoLMForMaskedLM,
    GenoLMForSequenceClassification,
    GenoLMForTokenClassification,
    GenoLMModel,
)
from genolm.info import count_parameters

TINY_V2 = dict(PRESETS["nt-v2-50m"], hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)


def tiny_config(**overrides) -> GenoLMConfig:
    return GenoLMConfig.from_preset("tiny", **overrides)


def random_batch(config: GenoLMConfig, batch: int = 3, tokens: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random k-mer ids with <cls> first; row i is padded after ``tokens - 4 * i`` tokens."""
    generator = torch.Generator().manual_seed(seed)
    first_kmer = 4 if config.vocab_layout == "nt-v1" else 6
    input_ids = torch.randint(first_kmer, first_kmer + 4096, (batch, tokens), generator=generator)
    input_ids[:, 0] = config.cls_token_id
    attention_mask = torch.ones_like(input_ids)
    for row in range(batch):
        input_ids[row, tokens - 4 * row :] = config.pad_token_id
        attention_mask[row, tokens - 4 * row :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def test_agront_preset_matches_esm_parameter_count():
    """agront-1b = transformers' EsmForMaskedLM with AgroNT's config, less ESM's 801-parameter contact head."""
    esm_config = EsmConfig(
        vocab_size=4105,
        hidden_size=1500,
        num_hidden_layers=40,
        num_attention_heads=20,
        intermediate_size=5120,
        max_position_embeddings=1026,
        pad_token_id=1,
        mask_token_id=2,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        esm = EsmForMaskedLM(esm_config)
    esm_params = sum(p.numel() for p in esm.parameters())
    contact_head = sum(p.numel() for p in esm.esm.contact_head.parameters())
    assert contact_head == 801  # 40 layers x 20 heads + 1 bias
    assert count_parameters(GenoLMConfig.from_preset("agront-1b")) == esm_params - contact_head


@pytest.mark.parametrize(
    "name, expected_millions",
    [("nt-v1-500m", 500), ("nt-v1-2.5b", 2500), ("nt-v2-50m", 50), ("nt-v2-500m", 500), ("agront-1b", 1000)],
)
def test_presets_have_published_sizes(name, expected_millions):
    params = count_parameters(GenoLMConfig.from_preset(name))
    assert abs(params / 1e6 - expected_millions) / expected_millions < 0.15, params


def test_config_rejects_contradictions():
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        tiny_config(num_attention_heads=5)
    with pytest.raises(ValueError, match="ffn_type"):
        tiny_config(ffn_type="relu")
    with pytest.raises(ValueError, match="unknown preset"):
        GenoLMConfig.from_preset("gpt-5")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny_config(vocab_size=3, mask_token_id=2, cls_token_id=3)


@pytest.mark.parametrize(
    "model_class, auto_class",
    [
        (GenoLMModel, AutoModel),
        (GenoLMForMaskedLM, AutoModelForMaskedLM),
        (GenoLMForSequenceClassification, AutoModelForSequenceClassification),
        (GenoLMForTokenClassification, AutoModelForTokenClassification),
    ],
)
def test_save_and_auto_reload_give_identical_outputs(tmp_path, model_class, auto_class):
    torch.manual_seed(0)
    config = tiny_config(num_labels=3, pooling="mean")
    model = model_class(config).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "genolm"
    reloaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(reloaded) is model_class
    assert reloaded.config.pooling == "mean"
    batch = random_batch(config)
    with torch.no_grad():
        expected, got = model(**batch)[0], reloaded(**batch)[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("architecture", ["nt-v1", "nt-v2"])
def test_eager_and_sdpa_attention_agree(architecture):
    torch.manual_seed(0)
    config = tiny_config() if architecture == "nt-v1" else GenoLMConfig(**TINY_V2)
    model = GenoLMForMaskedLM(config).eval()
    batch = random_batch(config)
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        model.config._attn_implementation = "sdpa"
        sdpa = model(**batch).logits
        model.config._attn_implementation = "eager"
        eager = model(**batch).logits
    torch.testing.assert_close(sdpa[keep], eager[keep], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", ["nt-v1", "nt-v2"])
def test_padding_invariance(architecture):
    """A sequence alone and the same sequence padded inside a batch give the same logits."""
    torch.manual_seed(0)
    config = tiny_config(token_dropout=True) if architecture == "nt-v1" else GenoLMConfig(**TINY_V2)
    model = GenoLMForMaskedLM(config).eval()
    batch = random_batch(config, batch=3, tokens=24)
    batch["input_ids"][2, 3] = config.mask_token_id  # token dropout rescaling depends on the unpadded length
    with torch.no_grad():
        padded = model(**batch).logits[2, :16]
        alone = model(input_ids=batch["input_ids"][2:, :16], attention_mask=batch["attention_mask"][2:, :16])
    torch.testing.assert_close(padded, alone.logits[0], rtol=1e-5, atol=1e-5)


def test_masked_lm_loss_and_sparse_prediction():
    torch.manual_seed(0)
    config = tiny_config()
    model = GenoLMForMaskedLM(config).eval()
    batch = random_batch(config)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 2:6] = batch["input_ids"][:, 2:6]
    with torch.no_grad():
        dense = model(**batch, labels=labels)
        manual = F.cross_entropy(dense.logits.view(-1, config.vocab_size), labels.view(-1), ignore_index=-100)
        sparse = model(**batch, labels=labels, sparse_prediction=True)
    torch.testing.assert_close(dense.loss, manual)
    assert sparse.logits.shape == (int((labels != -100).sum()), config.vocab_size)
    torch.testing.assert_close(sparse.loss, dense.loss, rtol=1e-6, atol=1e-6)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    config = tiny_config()
    batch = random_batch(config)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = GenoLMForMaskedLM(config).train()
        if checkpointing:
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        model(**batch, labels=labels).loss.backward()
        grads.append(model.genolm.encoder.layers[0].attention.query.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_sequence_classification_problem_types_and_mean_pooling():
    torch.manual_seed(0)
    batch = random_batch(tiny_config())
    # Mean pooling: average of non-padding tokens other than <cls>, computed here by a loop.
    model = GenoLMForSequenceClassification(tiny_config(num_labels=2, pooling="mean")).eval()
    with torch.no_grad():
        hidden = model.genolm(**batch).last_hidden_state
        from genolm.modeling_genolm import pool

        pooled = pool(hidden, batch["attention_mask"], "mean")
        for row in range(3):
            length = int(batch["attention_mask"][row].sum())
            torch.testing.assert_close(pooled[row], hidden[row, 1:length].mean(0))
        labels = torch.tensor([0, 1, 1])
        out = model(**batch, labels=labels)
        torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    assert model.config.problem_type == "single_label_classification"

    regression = GenoLMForSequenceClassification(tiny_config(num_labels=1)).eval()
    targets = torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        out = regression(**batch, labels=targets)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), targets))

    multilabel = GenoLMForSequenceClassification(
        tiny_config(num_labels=4, problem_type="multi_label_classification")
    ).eval()
    targets = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float)
    with torch.no_grad():
        out = multilabel(**batch, labels=targets)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, targets))


def test_token_classification_per_nucleotide():
    torch.manual_seed(0)
    config = tiny_config(num_labels=3, per_nucleotide=True)
    model = GenoLMForTokenClassification(config).eval()
    batch = random_batch(config)
    labels = torch.randint(0, 3, (3, 24, config.k))
    labels[batch["attention_mask"] == 0] = -100
    labels[:, 0] = -100
    with torch.no_grad():
        out = model(**batch, labels=labels)
    assert out.logits.shape == (3, 24, 6, 3)
    expected = F.cross_entropy(out.logits.reshape(-1, 3), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_fill_mask_pipeline(tiny_mlm_dir, tokenizer):
    fill = pipeline("fill-mask", model=str(tiny_mlm_dir), tokenizer=str(tiny_mlm_dir))
    sequence = "ATGGCG" * 4 + tokenizer.mask_token + "TTTAAA" * 3
    predictions = fill(sequence, top_k=5)
    assert len(predictions) == 5
    model = AutoModelForMaskedLM.from_pretrained(tiny_mlm_dir).eval()
    ids = tokenizer(sequence, return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits[0, ids["input_ids"][0].tolist().index(tokenizer.mask_token_id)]
    top = torch.softmax(logits, -1).topk(5)
    assert [p["token"] for p in predictions] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([p["score"] for p in predictions]), top.values, rtol=1e-4, atol=1e-6)


def test_trainer_runs_masked_lm(tmp_path, tiny_mlm_dir, tokenizer):
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from genolm.examples import read_chloroplast

    genome = read_chloroplast()
    sequences = [genome[i : i + 300] for i in range(0, 300 * 16, 300)]
    dataset = Dataset.from_dict(dict(tokenizer(sequences)))
    model = AutoModelForMaskedLM.from_pretrained(tiny_mlm_dir)
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, report_to=[], logging_steps=1,
        save_strategy="no", use_cpu=True,
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    result = trainer.train()
    assert result.global_step == 3
    assert torch.isfinite(torch.tensor(result.training_loss))


def test_sparse_prediction_in_an_old_config_is_ignored(tmp_path):
    """Checkpoints written before sparse prediction became a forward argument carry it in config.json; it must
    not change what downstream ``model(input_ids, labels=...)`` returns, and is not written back."""
    torch.manual_seed(0)
    model = GenoLMForMaskedLM(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    legacy = json.loads(config_file.read_text())
    assert "sparse_prediction" not in legacy
    config_file.write_text(json.dumps({**legacy, "sparse_prediction": True}))
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert not hasattr(reloaded.config, "sparse_prediction")
    batch = random_batch(reloaded.config)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 2:6] = batch["input_ids"][:, 2:6]
    with torch.no_grad():
        output = reloaded(**batch, labels=labels)
    assert output.logits.shape == (*batch["input_ids"].shape, reloaded.config.vocab_size)
    reloaded.save_pretrained(tmp_path / "again")
    assert "sparse_prediction" not in json.loads((tmp_path / "again" / "config.json").read_text())


def test_unknown_attention_implementation_raises():
    model = GenoLMForMaskedLM(tiny_config()).eval()
    batch = random_batch(model.config)
    model.config._attn_implementation = "flash_attention_2"  # set behind transformers' own check
    with pytest.raises(ValueError, match=r"attn_implementation='flash_attention_2'.*\['eager', 'sdpa'\]"):
        model(**batch)


def test_rotary_rotation_runs_in_fp32_under_bf16(monkeypatch):
    """The rotary tables reach the rotation in fp32 and the rotation is computed in fp32, then cast."""
    import genolm.modeling_genolm as modeling

    seen = []
    original = modeling.apply_rotary

    def recording(x, cos, sin):
        out = original(x, cos, sin)
        seen.append((x, cos, sin, out))
        return out

    monkeypatch.setattr(modeling, "apply_rotary", recording)
    torch.manual_seed(0)
    model = GenoLMModel(GenoLMConfig(**TINY_V2)).to(torch.bfloat16).eval()
    batch = random_batch(model.config, tokens=40)
    with torch.no_grad():
        model(**batch)
    assert seen
    for x, cos, sin, out in seen:
        assert cos.dtype == sin.dtype == torch.float32 and x.dtype == out.dtype == torch.bfloat16
        x32 = x.float()
        expected = x32 * cos + torch.cat((-x32[..., x32.shape[-1] // 2 :], x32[..., : x32.shape[-1] // 2]), -1) * sin
        torch.testing.assert_close(out, expected.to(torch.bfloat16), rtol=0, atol=0)
    # Positions far from 0 are where a bf16 table is wrong: cos/sin of large angles lose their low bits.
    position = torch.arange(40.0)[None]
    cos, _ = model.rotary(position)
    assert (cos - cos.to(torch.bfloat16).float()).abs().max() > 1e-3


def test_feature_extraction_pipeline_truncates_to_the_model(tmp_path):
    """A tokenizer saved with its model carries the model's limit, so a 12 kb sequence is cut to the positions
    the model has instead of indexing past its position table."""
    import random

    from genolm import GenoLMTokenizer
    from genolm.tokenization_genolm import fit_model_max_length

    config = tiny_config(max_position_embeddings=130)
    GenoLMForMaskedLM(config).save_pretrained(tmp_path)
    tokenizer = fit_model_max_length(GenoLMTokenizer(), config.max_tokens)
    assert tokenizer.model_max_length == config.max_tokens == 128
    tokenizer.save_pretrained(tmp_path)
    sequence = "".join(random.Random(0).choice("ACGT") for _ in range(12_000))
    extractor = pipeline("feature-extraction", model=str(tmp_path))
    features = extractor(sequence, truncation=True)
    assert len(features[0]) == 128 and len(features[0][0]) == config.hidden_size
    assert fit_model_max_length(GenoLMTokenizer(model_max_length=100), 128).model_max_length == 100
