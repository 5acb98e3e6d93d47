"""``genolm publish``: Hub-ready folders reload with ``AutoModel*.from_pretrained`` (the ESM export in a
process that never imports genolm), the model card carries its metadata, and ``--push`` calls HfApi."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from unittest import mock

import numpy as np
import pytest
import torch
import yaml

from genolm.cli import main
from genolm.publish import publish

SEQUENCE = "ATGACTGCAATTTTAGAGAGACGCGAAAGCGAAAGCCTATGGGGTCGCTTCTGTAACTGGATAACTAGCACTAACNNACGTTTAA"


@pytest.fixture()
def run_dir(tiny_mlm_dir, tmp_path):
    """A fine-tuning-style run folder: the checkpoint plus a training config and metrics beside it."""
    checkpoint = tmp_path / "run" / "best"
    shutil.copytree(tiny_mlm_dir, checkpoint)
    (tmp_path / "run" / "config.yaml").write_text(
        "model: tiny\nlearning_rate: 0.0003\nbatch_size: 8\nmax_steps: 20\ndata:\n  train: train.parquet\n"
    )
    (tmp_path / "run" / "metrics.json").write_text(
        json.dumps({"best_step": 10, "test": {"accuracy": 0.75, "mcc": 0.5}})
    )
    torch.save({"step": 20, "optimizer": {"state": {}}}, checkpoint / "training_state.pt")
    return checkpoint


def _front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def _logits(model, tokenizer) -> np.ndarray:
    batch = tokenizer([SEQUENCE], return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy()


def test_publish_genolm_folder(run_dir, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    out = publish(run_dir, tmp_path / "hub", repo_id="someone/tiny-genolm", datasets=["someone/reads"])
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "README.md",
        "config.yaml",
        "metrics.json",
    } <= names
    assert not {"training_state.pt", "checkpoint.json"} & names
    original = AutoModelForMaskedLM.from_pretrained(run_dir).eval()
    reloaded = AutoModelForMaskedLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    np.testing.assert_array_equal(_logits(original, tokenizer), _logits(reloaded, tokenizer))

    readme = (out / "README.md").read_text()
    meta = _front_matter(readme)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "genolm"
    assert meta["pipeline_tag"] == "fill-mask" and "genomics" in meta["tags"]
    assert meta["datasets"] == ["someone/reads"] and meta["metrics"] == ["accuracy", "mcc"]
    results = meta["model-index"][0]["results"][0]["metrics"]
    assert {m["name"]: m["value"] for m in results} == {"test.accuracy": 0.75, "test.mcc": 0.5}
    assert "| `learning_rate` | `0.0003` |" in readme and "`data.train`: `train.parquet`" in readme
    assert "| `run: step` | `20` |" in readme and "| `run: best_step` | `10` |" in readme
    assert 'AutoModelForMaskedLM.from_pretrained("someone/tiny-genolm")' in readme


def test_publish_esm_loads_without_genolm(run_dir, tmp_path):
    from transformers import AutoModelForMaskedLM

    out = tmp_path / "esm"
    assert main(["publish", str(run_dir), str(out), "--format", "esm", "--license", "cc-by-nc-sa-4.0"]) == 0
    meta = _front_matter((out / "README.md").read_text())
    assert meta["library_name"] == "transformers" and meta["license"] == "cc-by-nc-sa-4.0"
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np, torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({str(out)!r})
        model = AutoModelForMaskedLM.from_pretrained({str(out)!r}).eval()
        batch = tokenizer([{SEQUENCE!r}], return_tensors="pt")
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        np.save({str(tmp_path / "esm_logits.npy")!r}, logits.numpy())
        np.save({str(tmp_path / "esm_ids.npy")!r}, batch["input_ids"].numpy())
        assert type(model).__name__ == "EsmForMaskedLM", type(model)
        assert "genolm" not in sys.modules, "genolm was imported"
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    from genolm import GenoLMTokenizer

    tokenizer = GenoLMTokenizer.from_pretrained(run_dir)
    ids = tokenizer([SEQUENCE], return_tensors="pt")["input_ids"].numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "esm_ids.npy"), ids)  # same tokens without genolm
    expected = _logits(AutoModelForMaskedLM.from_pretrained(run_dir).eval(), tokenizer)
    np.testing.assert_allclose(np.load(tmp_path / "esm_logits.npy"), expected, atol=1e-4)


def test_publish_push_uses_hf_api(run_dir, tmp_path):
    with mock.patch("genolm.publish.HfApi") as api_class:
        api = api_class.return_value
        api.upload_folder.return_value = mock.Mock(commit_url="https://huggingface.co/someone/tiny/commit/1")
        out = publish(
            run_dir, tmp_path / "hub", repo_id="someone/tiny", push=True, private=True, token="hf_x"
        )
    api_class.assert_called_once_with(token="hf_x")
    api.create_repo.assert_called_once_with(
        repo_id="someone/tiny", repo_type="model", private=True, exist_ok=True
    )
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["folder_path"] == str(out) and kwargs["repo_id"] == "someone/tiny"
    with pytest.raises(ValueError, match="repo_id"):
        publish(run_dir, tmp_path / "again", push=True)


def test_publish_esm_refuses_nt_v2(tmp_path):
    from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMTokenizer

    config = GenoLMConfig.from_preset(
        "nt-v2-50m", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    GenoLMForMaskedLM(config).save_pretrained(tmp_path / "v2")
    GenoLMTokenizer(vocab_layout="nt-v2").save_pretrained(tmp_path / "v2")
    with pytest.raises(ValueError, match="ESM cannot express"):
        publish(tmp_path / "v2", tmp_path / "out", output_format="esm")
    assert not (tmp_path / "out").exists()


def test_publish_reads_a_pretraining_run(tiny_mlm_dir, tmp_path):
    """recipes/pretrain.py layout: run/log.jsonl and run/checkpoints/step-N/training_state.pt (with the config)."""
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000020"
    shutil.copytree(tiny_mlm_dir, checkpoint)
    torch.save(
        {"step": 20, "tokens_seen": 5120, "config": {"lr": 0.001, "sources": []}},
        checkpoint / "training_state.pt",
    )
    log = [{"step": 10, "val_loss": 8.0, "val_perplexity": 2981.0}, {"step": 30, "val_loss": 7.0}]
    (tmp_path / "run" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    out = publish(checkpoint, tmp_path / "hub")
    readme = (out / "README.md").read_text()
    assert yaml.safe_load((out / "training_config.yaml").read_text()) == {"lr": 0.001, "sources": []}
    assert "| validation.perplexity | 2981 |" in readme and "| `run: tokens_seen` | `5120` |" in readme
    assert _front_matter(readme)["metrics"] == ["loss", "perplexity"]


@pytest.mark.parametrize("output_format", ["genolm", "esm"])
def test_published_tokenizer_carries_the_model_limit(run_dir, tmp_path, output_format):
    """The checkpoint's tokenizer has no limit (1e30); the published one truncates to the model's positions."""
    from transformers import AutoConfig, AutoTokenizer

    assert AutoTokenizer.from_pretrained(run_dir).model_max_length > 1e29
    out = publish(run_dir, tmp_path / "hub", output_format=output_format)
    config = AutoConfig.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).model_max_length == config.max_position_embeddings - 2 == 1024


def test_publish_refuses_its_checkpoint_and_used_folders(run_dir, tmp_path, monkeypatch):
    """The published folder may not be (or lie inside) the checkpoint, a non-empty folder is replaced only with
    overwrite=True, and a failure part-way leaves no half-written folder."""
    import hashlib

    def digest(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}

    before = digest(run_dir)
    with pytest.raises(ValueError, match=rf"output folder out_dir {run_dir}/hub lies inside the input folder checkpoint"):
        publish(run_dir, run_dir / "hub")
    assert digest(run_dir) == before

    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"output folder out_dir {used} exists and is not empty.*--overwrite"):
        publish(run_dir, used)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]

    import genolm.publish as publish_module

    def broken_card(*args, **kwargs):
        raise RuntimeError("card template broke")

    monkeypatch.setattr(publish_module, "model_card", broken_card)
    with pytest.raises(RuntimeError, match="card template"):
        publish(run_dir, used, overwrite=True)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".genolm-tmp")) == []
    monkeypatch.undo()
    out = publish(run_dir, used, overwrite=True)
    assert (out / "README.md").exists() and not (out / "keep.txt").exists()
    assert digest(run_dir) == before
