"""Interop with transformers' ESM format (published NT v1 / AgroNT weights) and the NT-v2 Hub layout."""

from __future__ import annotations

import json
import subprocess
import sys

import pysam
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForMaskedLM,
    EsmConfig,
    EsmForMaskedLM,
    EsmForSequenceClassification,
    EsmTokenizer,
)

from genolm import PRESETS, GenoLMConfig, GenoLMForMaskedLM, GenoLMTokenizer
from genolm.cli import main
from genolm.convert import (
    esm_key_to_genolm,
    genolm_key_to_esm,
    genolm_to_esm,
    max_logits_difference,
    write_esm_tokenizer,
)
from genolm.errors import InputDataError

# Tiny ESM configs with the published NT v1 (token dropout, 1002 positions) and AgroNT (1026 positions) shapes.
ESM_SHAPES = {
    "nt-v1": dict(max_position_embeddings=1002, token_dropout=True),
    "agront": dict(max_position_embeddings=1026, token_dropout=False),
}


def write_esm_checkpoint(path, shape: str, head=EsmForMaskedLM, seed: int = 0):
    """A randomly initialised ESM checkpoint of NT shape written by transformers itself, with NT's vocab.txt.

    Every parameter is perturbed so that LayerNorm weights and biases are not at their trivial init."""
    config = EsmConfig(
        vocab_size=4105,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        pad_token_id=1,
        mask_token_id=2,
        eos_token_id=None,
        tie_word_embeddings=False,
        num_labels=3,
        **ESM_SHAPES[shape],
    )
    torch.manual_seed(seed)
    model = head(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(path)
    write_esm_tokenizer(GenoLMTokenizer(), path)
    return model.eval()


def real_batch(shared_data, tokenizer, n_tokens: int = 120) -> dict[str, torch.Tensor]:
    """Windows of the soft-masked Chr5 excerpt, one padded, one containing an N run, a few tokens masked."""
    with pysam.FastaFile(str(shared_data / "athaliana_chr5_tail.fa.gz")) as fasta:
        region = fasta.fetch("Chr5_25975502_26975502", 600_000, 603_000).upper()
    sequences = [region[:700], region[1000:1300], region[2000:2200] + "NNNNN" + region[2200:2400]]
    batch = tokenizer(sequences, padding=True, truncation=True, max_length=n_tokens, return_tensors="pt")
    batch["input_ids"][:, 10:13] = tokenizer.mask_token_id
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@pytest.mark.parametrize("shape", ["nt-v1", "agront"])
def test_esm_round_trip_preserves_logits(tmp_path, shared_data, tokenizer, shape):
    esm = write_esm_checkpoint(tmp_path / "esm", shape)
    assert main(["convert", "esm-to-genolm", str(tmp_path / "esm"), str(tmp_path / "genolm")]) == 0
    genolm_model = AutoModelForMaskedLM.from_pretrained(tmp_path / "genolm")
    assert isinstance(genolm_model, GenoLMForMaskedLM)
    assert genolm_model.config.token_dropout is ESM_SHAPES[shape]["token_dropout"]
    batch = real_batch(shared_data, tokenizer)
    esm.config._attn_implementation = "eager"
    assert max_logits_difference(esm, genolm_model, batch) < 1e-4

    assert main(["convert", "genolm-to-esm", str(tmp_path / "genolm"), str(tmp_path / "back")]) == 0
    back = EsmForMaskedLM.from_pretrained(tmp_path / "back", attn_implementation="eager")
    assert max_logits_difference(esm, back, batch) < 1e-4
    # The weights themselves survive the round trip bit for bit.
    original = {k: v for k, v in esm.state_dict().items() if "contact_head" not in k}
    returned = back.state_dict()
    for key, value in original.items():
        if not key.endswith(("position_ids", "inv_freq")):
            torch.testing.assert_close(returned[key], value, rtol=0, atol=0, msg=key)


def test_sequence_classifier_converts(tmp_path, shared_data, tokenizer):
    esm = write_esm_checkpoint(tmp_path / "esm", "agront", head=EsmForSequenceClassification)
    converted = main(["convert", "esm-to-genolm", str(tmp_path / "esm"), str(tmp_path / "genolm")])
    assert converted == 0
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "genolm")
    esm.config._attn_implementation = "eager"
    assert max_logits_difference(esm, model, real_batch(shared_data, tokenizer)) < 1e-4


def test_legacy_layer_norm_names_are_read(tmp_path, shared_data, tokenizer):
    """ESM folders may hold LayerNorm parameters as gamma/beta or as weight/bias: both convert alike."""
    esm = write_esm_checkpoint(tmp_path / "esm", "nt-v1")
    state = load_file(tmp_path / "esm" / "model.safetensors")
    renamed = {k.replace(".gamma", ".weight").replace(".beta", ".bias"): v for k, v in state.items()}
    assert not any(k.endswith((".gamma", ".beta")) for k in renamed)
    save_file(renamed, tmp_path / "esm" / "model.safetensors", metadata={"format": "pt"})
    main(["convert", "esm-to-genolm", str(tmp_path / "esm"), str(tmp_path / "genolm")])
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "genolm")
    esm.config._attn_implementation = "eager"
    assert max_logits_difference(esm, model, real_batch(shared_data, tokenizer)) < 1e-4


def test_exported_checkpoint_loads_without_genolm(tmp_path, tiny_mlm_dir, tokenizer):
    """The ESM export is loadable by plain transformers: model, EsmTokenizer ids equal genolm's, no <eos>."""
    genolm_to_esm(tiny_mlm_dir, tmp_path / "esm")
    config = json.loads((tmp_path / "esm" / "config.json").read_text())
    assert config["model_type"] == "esm" and config.get("eos_token_id") is None
    sequence = "ATGCATGCATTTNNACGTACGTAGGCTAGCTAGCATCGACTGAC"
    code = f"""
import sys, torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(tmp_path / 'esm')!r})
model = AutoModelForMaskedLM.from_pretrained({str(tmp_path / 'esm')!r})
ids = tok({sequence!r}, return_tensors='pt')
print(type(model).__name__, ids['input_ids'][0].tolist())
assert 'genolm' not in sys.modules
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name, ids = result.stdout.strip().split(" ", 1)
    assert name == "EsmForMaskedLM"
    assert json.loads(ids) == tokenizer(sequence)["input_ids"]
    esm_tokenizer = EsmTokenizer.from_pretrained(tmp_path / "esm")
    assert esm_tokenizer(sequence)["input_ids"][-1] != esm_tokenizer.convert_tokens_to_ids("<eos>")


def test_export_of_nt_v2_architecture_is_refused(tmp_path):
    config = GenoLMConfig(**dict(PRESETS["nt-v2-50m"], hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64))
    GenoLMForMaskedLM(config).save_pretrained(tmp_path / "v2")
    GenoLMTokenizer(vocab_layout="nt-v2").save_pretrained(tmp_path / "v2")
    with pytest.raises(ValueError, match="ESM cannot express this architecture"):
        genolm_to_esm(tmp_path / "v2", tmp_path / "out")
    assert main(["convert", "genolm-to-esm", str(tmp_path / "v2"), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_nt_v2_hub_layout_converts(tmp_path, shared_data):
    """NT-v2 Hub checkpoints use ESM key names with a SwiGLU up-projection of 2 x intermediate_size rows and
    `add_bias_fnn: false`. A genolm NT-v2 model written in that layout converts back to identical logits."""
    torch.manual_seed(0)
    config = GenoLMConfig(**dict(PRESETS["nt-v2-50m"], hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=48))
    model = GenoLMForMaskedLM(config).eval()
    hub = tmp_path / "hub"
    hub.mkdir()
    state = {genolm_key_to_esm(k): v.clone() for k, v in model.state_dict().items()}
    state["esm.embeddings.position_embeddings.weight"] = torch.randn(2050, 32)  # present, unused, in NT-v2 files
    assert "esm.encoder.layer.0.intermediate.dense.weight" in state
    assert state["esm.encoder.layer.0.intermediate.dense.weight"].shape == (96, 32)
    save_file(state, hub / "model.safetensors", metadata={"format": "pt"})
    esm_config = dict(
        model_type="esm", architectures=["EsmForMaskedLM"], vocab_size=4107, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=48, max_position_embeddings=2050, position_embedding_type="rotary",
        add_bias_fnn=False, token_dropout=False, mask_token_id=2, pad_token_id=1, layer_norm_eps=1e-12,
        tie_word_embeddings=False,
    )
    (hub / "config.json").write_text(json.dumps(esm_config))
    tokenizer = GenoLMTokenizer(vocab_layout="nt-v2")
    write_esm_tokenizer(tokenizer, hub)
    main(["convert", "esm-to-genolm", str(hub), str(tmp_path / "genolm")])
    converted = AutoModelForMaskedLM.from_pretrained(tmp_path / "genolm")
    assert converted.config.ffn_type == "swiglu" and converted.config.vocab_layout == "nt-v2"
    assert max_logits_difference(model, converted, real_batch(shared_data, tokenizer)) == 0


def test_key_mapping_is_a_bijection():
    config = GenoLMConfig.from_preset("tiny")
    keys = list(GenoLMForMaskedLM(config).state_dict())
    assert [esm_key_to_genolm(genolm_key_to_esm(k)) for k in keys] == keys
    assert esm_key_to_genolm("esm.contact_head.regression.weight") is None
    with pytest.raises(InputDataError, match="unexpected ESM"):
        esm_key_to_genolm("esm.encoder.layer.0.crossattention.self.query.weight")


def test_info_command(tmp_path, tiny_mlm_dir, capsys):
    assert main(["info", str(tiny_mlm_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model = AutoModelForMaskedLM.from_pretrained(tiny_mlm_dir)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["vocab_layout"] == "nt-v1" and info["context_tokens"] == 1024 and info["positions"] == "learned absolute"
    assert main(["info", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_model_max_length_is_kept_both_ways(tmp_path):
    """The source tokenizer's model_max_length (AgroNT ships 1024) survives esm-to-genolm and genolm-to-esm;
    without one (here 1e30) both sides get the model's positions (1026 - 2 = 1024 for AgroNT)."""
    from genolm.convert import esm_to_genolm

    for declared, expected in ((1000, 1000), (int(1e30), 1024)):
        source = tmp_path / f"agront-{declared}"
        write_esm_checkpoint(source, "agront")
        tokenizer_config = source / "tokenizer_config.json"
        tokenizer_config.write_text(json.dumps({**json.loads(tokenizer_config.read_text()), "model_max_length": declared}))
        esm_to_genolm(source, tmp_path / f"genolm-{declared}")
        assert GenoLMTokenizer.from_pretrained(tmp_path / f"genolm-{declared}").model_max_length == expected
        genolm_to_esm(tmp_path / f"genolm-{declared}", tmp_path / f"back-{declared}")
        assert EsmTokenizer.from_pretrained(tmp_path / f"back-{declared}").model_max_length == expected


def _tree_digest(folder) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_convert_never_writes_over_or_inside_its_source(tmp_path, tiny_mlm_dir, capsys):
    """`genolm convert genolm-to-esm X X` once overwrote the source checkpoint in place: refused now, before any
    work, as is a destination inside the source or a non-empty destination (without overwrite=True)."""
    import shutil

    src = tmp_path / "ckpt"
    shutil.copytree(tiny_mlm_dir, src)
    before = _tree_digest(src)
    assert main(["convert", "genolm-to-esm", str(src), str(src)]) == 2
    assert f"output folder dst {src} is also the input src {src}" in capsys.readouterr().err
    assert main(["convert", "genolm-to-esm", str(src), str(src / "esm")]) == 2
    assert "lies inside the input folder src" in capsys.readouterr().err
    assert _tree_digest(src) == before

    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"output folder dst {used} exists and is not empty"):
        genolm_to_esm(src, used)
    assert sorted(p.name for p in used.iterdir()) == ["notes.txt"]
    genolm_to_esm(src, used, overwrite=True)
    assert (used / "config.json").exists() and not (used / "notes.txt").exists()
    assert _tree_digest(src) == before


def test_failed_conversion_leaves_no_folder(tmp_path, tiny_mlm_dir, monkeypatch):
    import genolm.convert as convert_module

    def failing_tokenizer(tokenizer, dst):
        (dst / "vocab.txt").write_text("<unk>\n")
        raise OSError("disk went away")

    monkeypatch.setattr(convert_module, "write_esm_tokenizer", failing_tokenizer)
    with pytest.raises(OSError, match="disk went away"):
        genolm_to_esm(tiny_mlm_dir, tmp_path / "esm")
    assert list(tmp_path.iterdir()) == []


def test_convert_names_a_corrupt_weights_file(tmp_path, tiny_mlm_dir, capsys):
    import shutil

    src = tmp_path / "ckpt"
    shutil.copytree(tiny_mlm_dir, src)
    (src / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:200])
    assert main(["convert", "genolm-to-esm", str(src), str(tmp_path / "esm")]) == 2
    err = capsys.readouterr().err
    assert f"{src / 'model.safetensors'}: not a readable safetensors file" in err
    assert not (tmp_path / "esm").exists()
