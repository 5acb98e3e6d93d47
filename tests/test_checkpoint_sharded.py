"""Sharded training checkpoints (torch.distributed.checkpoint): layout and manifest, exact save/load in one
process, asynchronous saves, ``genolm export``, the pretraining recipe's sharded resume, and (slow) FSDP2 over 2
gloo processes: no process writes the whole optimizer state, and a checkpoint of 2 processes resumes on 1 and
one of 1 on 2 with exactly the same weights and optimizer state."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMTokenizer, parallel
from genolm.cli import main as cli_main
from genolm.errors import ConfigError, InputDataError
from genolm.publish import read_training_metadata
from genolm.training import checkpoint as ckpt
from genolm.training.config import PretrainConfig
from genolm.training.metrics import read_log
from genolm.training.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "sharded_checkpoint_worker.py"
DEBUG = REPO / "recipes" / "configs" / "debug.yaml"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


@pytest.fixture(scope="module")
def rt():
    torch.set_num_threads(1)
    return parallel.setup("none", mixed_precision="no")


def _trained(rt, steps: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    model = GenoLMForMaskedLM(GenoLMConfig.from_preset("tiny", sparse_prediction=False))
    model, optimizer = rt.prepare(model, lambda m: build_optimizer(m, 1e-2, 0.1))
    ids = torch.randint(5, 4100, (4, 16), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 3
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, optimizer, ids


def _snapshot(model, optimizer) -> tuple[dict, dict]:
    weights = {n: p.detach().clone() for n, p in model.state_dict().items()}
    state = {i: {k: v.clone() for k, v in s.items()} for i, s in optimizer.state_dict()["state"].items()}
    return weights, state


def _assert_same_state(model, optimizer, snapshot) -> None:
    weights, state = snapshot
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    loaded = optimizer.state_dict()["state"]
    assert set(loaded) == set(state) and state
    for index, moments in state.items():
        for key, value in moments.items():
            assert torch.equal(loaded[index][key], value), (index, key)


def _fresh(rt, checkpoint: Path):
    """Model built from the checkpoint's config.json (random weights) and its optimizer, prepared."""
    torch.manual_seed(123)
    model = GenoLMForMaskedLM(GenoLMConfig.from_pretrained(checkpoint))
    return rt.prepare(model, lambda m: build_optimizer(m, 1e-2, 0.1))


def test_checkpoint_format_choice():
    assert ckpt.checkpoint_format("auto", shards_parameters=False, num_processes=1) == "consolidated"
    assert ckpt.checkpoint_format("auto", shards_parameters=False, num_processes=2) == "sharded"
    assert ckpt.checkpoint_format("auto", shards_parameters=True, num_processes=1) == "sharded"
    assert ckpt.checkpoint_format("consolidated", shards_parameters=True, num_processes=8) == "consolidated"
    why = "the planner drops partially replicated tensors"
    assert ckpt.checkpoint_format("auto", True, 4, unsupported=why) == "consolidated"
    with pytest.raises(ConfigError, match=f"^checkpoint_format=sharded: {why}; use checkpoint_format=consolidated"):
        ckpt.checkpoint_format("sharded", True, 4, unsupported=why)
    with pytest.raises(ConfigError, match="checkpoint_format='zip'; expected one of auto, sharded, consolidated"):
        ckpt.checkpoint_format("zip", False, 1)
    with pytest.raises(ConfigError, match="checkpoint_format='dcp'; expected auto, sharded or consolidated"):
        PretrainConfig(checkpoint_format="dcp")


def test_sharded_checkpoint_in_one_process_roundtrips_exactly(rt, tmp_path, capsys):
    """Layout and manifest of a sharded checkpoint; a model built from its config.json gets back exactly the
    saved weights and optimizer state; from_pretrained refuses it with the export hint; `genolm export` writes
    a folder that AutoModelForMaskedLM reloads with the live model's logits."""
    from transformers import AutoModelForMaskedLM

    model, optimizer, ids = _trained(rt)
    snapshot = _snapshot(model, optimizer)
    process_state = {"stream": {"epoch": 1, "rows": torch.arange(5)}, "rng": torch.get_rng_state()}
    path = ckpt.save_sharded_checkpoint(
        tmp_path / "checkpoints", 2, rt, model, optimizer, tokenizer=GenoLMTokenizer(),
        trainer_state={"step": 2, "tokens_seen": 128, "scheduler": {"last_epoch": 2}}, process_state=process_state,
    ).finish()
    assert path == tmp_path / "checkpoints" / "step-00000002"
    files = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}
    assert {"config.json", "tokenizer.json", "trainer_state.json", "process-00000.pt", "checkpoint.json",
            "dcp/.metadata", "dcp/__0_0.distcp"} <= files and "model.safetensors" not in files  # fmt: skip
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000002"]  # no temporary left
    manifest = json.loads((path / "checkpoint.json").read_text())
    assert set(manifest["sha256"]) == files - {"checkpoint.json"}
    assert manifest["sha256"]["dcp/__0_0.distcp"] == ckpt.file_sha256(path / "dcp" / "__0_0.distcp")
    assert ckpt.latest_checkpoint(tmp_path / "checkpoints") == path
    trainer = json.loads((path / "trainer_state.json").read_text())
    assert trainer == {"step": 2, "tokens_seen": 128, "scheduler": {"last_epoch": 2}, "backend": "none",
                       "num_processes": 1, "num_devices": 1, "mesh_shape": None}  # fmt: skip

    fresh_model, fresh_optimizer = _fresh(rt, path)
    assert not torch.equal(fresh_model.state_dict()["lm_head.decoder.weight"], snapshot[0]["lm_head.decoder.weight"])
    resumed = ckpt.load_checkpoint(path, rt, fresh_model, fresh_optimizer)
    _assert_same_state(fresh_model, fresh_optimizer, snapshot)
    assert resumed.sharded and resumed.trainer["step"] == 2
    assert resumed.process["stream"]["epoch"] == 1 and torch.equal(resumed.process["stream"]["rows"], torch.arange(5))
    assert torch.equal(resumed.process["rng"], process_state["rng"])

    with pytest.raises(InputDataError, match=r"sharded training checkpoint \(dcp/\) without consolidated weights: "
                                             r"export it with `genolm export"):  # fmt: skip
        AutoModelForMaskedLM.from_pretrained(path)
    out = tmp_path / "export"
    assert cli_main(["export", str(path), str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    exported = AutoModelForMaskedLM.from_pretrained(out).eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)
    assert GenoLMTokenizer.from_pretrained(out).get_vocab() == GenoLMTokenizer().get_vocab()


def test_asynchronous_save_keeps_the_state_of_its_step(rt, tmp_path):
    """Training goes on while an asynchronous save writes: the checkpoint holds the state at the save, and
    nothing is visible under step-* until finish()."""
    model, optimizer, ids = _trained(rt)
    snapshot = _snapshot(model, optimizer)
    pending = ckpt.save_sharded_checkpoint(
        tmp_path, 2, rt, model, optimizer, tokenizer=GenoLMTokenizer(), trainer_state={"step": 2},
        process_state={}, asynchronous=True,
    )
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()  # in place: the parameters and moments the save started from change now
    assert not torch.equal(model.state_dict()["lm_head.decoder.weight"], snapshot[0]["lm_head.decoder.weight"])
    path = pending.finish()
    assert ckpt.checkpoint_problem(path, verify_hashes=True) is None
    fresh_model, fresh_optimizer = _fresh(rt, path)
    ckpt.load_checkpoint(path, rt, fresh_model, fresh_optimizer)
    _assert_same_state(fresh_model, fresh_optimizer, snapshot)


def test_export_refuses_what_is_not_a_complete_checkpoint(rt, tmp_path, capsys):
    model, optimizer, _ = _trained(rt, steps=1)
    path = ckpt.save_sharded_checkpoint(
        tmp_path / "checkpoints", 1, rt, model, optimizer, tokenizer=GenoLMTokenizer(), trainer_state={"step": 1},
        process_state={},
    ).finish()
    out = tmp_path / "out"
    assert cli_main(["export", str(tmp_path / "missing"), str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"genolm export: error: {tmp_path / 'missing'}: no such checkpoint folder"
    assert cli_main(["export", str(tmp_path), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"genolm export: error: {tmp_path}: not a complete genolm training checkpoint: no checkpoint.json (the save did not finish)"
    shard = path / "dcp" / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    assert cli_main(["export", str(path), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("dcp/__0_0.distcp does not match its sha256 in checkpoint.json (corrupted or altered)")
    assert len(err.splitlines()) == 1 and not out.exists()


def _load_recipe():
    spec = importlib.util.spec_from_file_location("pretrain_recipe", REPO / "recipes" / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_resumes_a_sharded_asynchronous_checkpoint_exactly(tmp_path, capsys):
    """recipes/pretrain.py with sharded, asynchronous checkpoints in one process: the intermediate checkpoint
    holds no consolidated weights, the last one does (from_pretrained loads it); a run resumed from the
    step-3 checkpoint logs the losses of the uninterrupted run and ends with identical weights. The publish
    command's metadata reader finds the run's configuration and step in trainer_state.json."""
    from safetensors.torch import load_file

    args = ["--config", str(DEBUG), "--max_steps", "6", "--checkpoint_every", "3", "--max_tokens", "31",
            "--batch_size", "2", "--eval_batches", "1", "--checkpoint_format", "sharded", "--checkpoint_async", "true"]  # fmt: skip
    reference = tmp_path / "reference"
    summary = _load_recipe().main([*args, "--output_dir", str(reference), "--keep_checkpoints", "5"])
    checkpoints = reference / "checkpoints"
    assert summary["checkpoint"] == str(checkpoints / "step-00000006")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000003", "step-00000006"]
    assert ckpt.is_sharded_checkpoint(checkpoints / "step-00000003")
    assert not (checkpoints / "step-00000003" / "model.safetensors").exists()
    assert (checkpoints / "step-00000006" / "model.safetensors").is_file()
    GenoLMForMaskedLM.from_pretrained(checkpoints / "step-00000006")
    metadata = read_training_metadata(checkpoints / "step-00000006")  # genolm publish reads trainer_state.json
    assert metadata["config"]["checkpoint_format"] == "sharded" and metadata["facts"]["step"] == 6
    assert metadata["facts"]["tokens_seen"] == 6 * 2 * 32
    expected = {r["step"]: r["loss"] for r in read_log(reference / "log.jsonl") if "loss" in r}

    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000006")
    capsys.readouterr()
    _load_recipe().main([*args, "--output_dir", str(resumed), "--keep_checkpoints", "5", "--resume"])
    assert f"resumed from {resumed / 'checkpoints' / 'step-00000003'} at step 3" in capsys.readouterr().out
    got = {r["step"]: r["loss"] for r in read_log(resumed / "log.jsonl") if "loss" in r}
    assert sorted(got) == list(range(1, 7))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step
    final = [load_file(d / "checkpoints" / "step-00000006" / "model.safetensors") for d in (reference, resumed)]
    assert final[0].keys() == final[1].keys()
    for name in final[0]:
        torch.testing.assert_close(final[1][name], final[0][name], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------
# FSDP2 over 2 gloo processes
# ---------------------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "ACCELERATE_USE_FSDP")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    return env


def _run(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="module")
def resharded(tmp_path_factory) -> Path:
    """2 FSDP2 processes train 2 steps and save (fsdp/); 1 process resumes that checkpoint, trains 1 step and
    saves (one/); 2 FSDP2 processes resume that one (fsdp_again/)."""
    root = tmp_path_factory.mktemp("resharded")
    for name in ("fsdp", "one", "fsdp_again"):
        (root / name).mkdir()
    _run(TORCHRUN + [str(WORKER), str(root / "fsdp"), "--parallel", "fsdp", "--steps", "2"])
    _run([sys.executable, str(WORKER), str(root / "one"), "--parallel", "none", "--steps", "1",
          "--resume", str(root / "fsdp" / "checkpoints" / "step-00000002")])  # fmt: skip
    _run(TORCHRUN + [str(WORKER), str(root / "fsdp_again"), "--parallel", "fsdp", "--steps", "0",
                     "--resume", str(root / "one" / "checkpoints" / "step-00000003")])  # fmt: skip
    return root


def _assert_same_full_state(got: dict, expected: dict) -> None:
    assert got["model"].keys() == expected["model"].keys()
    for name, value in expected["model"].items():
        assert torch.equal(got["model"][name], value), name
    state, expected_state = got["optimizer"]["state"], expected["optimizer"]["state"]
    assert set(state) == set(expected_state) == set(expected["model"])  # every parameter has its moments
    for name, moments in expected_state.items():
        assert set(state[name]) == set(moments) == {"step", "exp_avg", "exp_avg_sq"}
        for key, value in moments.items():
            assert torch.equal(torch.as_tensor(state[name][key]).float(), torch.as_tensor(value).float()), (name, key)


@pytest.mark.slow
def test_fsdp2_processes_each_write_their_own_shards(resharded):
    """One .distcp file per process, and neither holds the whole optimizer state: by DCP's metadata each
    file stores the elements of about half of every AdamW moment, and each file is about half the size of
    the full weights and moments."""
    from torch.distributed.checkpoint import FileSystemReader

    folder = resharded / "fsdp" / "checkpoints" / "step-00000002" / "dcp"
    assert sorted(p.name for p in folder.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    full = torch.load(resharded / "fsdp" / "saved.pt", weights_only=True)
    moments = {
        f"optimizer.state.{name}.{key}": value
        for name, state in full["optimizer"]["state"].items()
        for key, value in state.items()
        if key != "step"
    }
    full_bytes = sum(v.numel() * v.element_size() for v in [*moments.values(), *full["model"].values()])
    metadata = FileSystemReader(folder).read_metadata()
    file_of = {
        (index.fqn, tuple(index.offset)): info.relative_path
        for index, info in metadata.storage_data.items()
        if index.offset is not None  # tensors (not the pickled param_groups)
    }
    elements: dict[str, dict[str, int]] = {}  # file -> moment -> elements stored
    for fqn in moments:
        for chunk in metadata.state_dict_metadata[fqn].chunks:
            file = file_of[(fqn, tuple(chunk.offsets))]
            elements.setdefault(file, {}).setdefault(fqn, 0)
            elements[file][fqn] += chunk.sizes.numel()
    assert sorted(elements) == ["__0_0.distcp", "__1_0.distcp"]
    for fqn, value in moments.items():
        assert sum(elements[f].get(fqn, 0) for f in elements) == value.numel(), fqn  # every element once
    for file, stored in elements.items():
        total = sum(stored.values())
        full_moments = sum(v.numel() for v in moments.values())
        assert 0.4 * full_moments < total < 0.6 * full_moments, (file, total, full_moments)
        assert 0.4 * full_bytes < (folder / file).stat().st_size < 0.6 * full_bytes, (file, full_bytes)


@pytest.mark.slow
def test_two_process_checkpoint_resumes_on_one_and_back_exactly(resharded):
    """The 2-process FSDP2 checkpoint loads on 1 process with exactly the weights and AdamW state the 2
    processes gathered; the 1-process checkpoint loads on 2 FSDP2 processes exactly; process states follow
    their process index (process i takes saved process i mod the saved count, with a note: see
    genolm.training.resume.resume_plan)."""
    saved_two = torch.load(resharded / "fsdp" / "saved.pt", weights_only=True)
    loaded_one = torch.load(resharded / "one" / "loaded.pt", weights_only=True)
    _assert_same_full_state(loaded_one, saved_two)
    torch.testing.assert_close(loaded_one["logits"], saved_two["logits"], rtol=1e-5, atol=1e-5)
    assert loaded_one["trainer"]["backend"] == "fsdp" and loaded_one["trainer"]["num_processes"] == 2
    assert loaded_one["trainer"]["mesh_shape"] == [2] and loaded_one["trainer"]["step"] == 2
    assert loaded_one["processes"][0]["process_index"] == 0

    saved_one = torch.load(resharded / "one" / "saved.pt", weights_only=True)
    loaded_two = torch.load(resharded / "fsdp_again" / "loaded.pt", weights_only=True)
    _assert_same_full_state(loaded_two, saved_one)
    assert loaded_two["trainer"]["step"] == 3 and loaded_two["trainer"]["backend"] == "none"
    assert [p["process_index"] for p in loaded_two["processes"]] == [0, 0]


@pytest.mark.slow
def test_export_of_a_two_process_checkpoint_gives_the_live_logits(resharded, tmp_path):
    """`genolm export` consolidates the 2-process checkpoint in one process: the exact gathered weights, and
    AutoModelForMaskedLM computes the logits the FSDP2 processes computed."""
    from transformers import AutoModelForMaskedLM

    out = tmp_path / "export"
    assert cli_main(["export", str(resharded / "fsdp" / "checkpoints" / "step-00000002"), str(out)]) == 0
    saved = torch.load(resharded / "fsdp" / "saved.pt", weights_only=True)
    exported = AutoModelForMaskedLM.from_pretrained(out).eval()
    for name, value in exported.state_dict().items():
        assert torch.equal(value, saved["model"][name]), name
    batch = saved["batch"]
    with torch.no_grad():
        logits = exported(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(logits, saved["logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_ddp_checkpoint_resumes_under_fsdp2_exactly(tmp_path):
    """A sharded checkpoint of 2 DDP processes (whole model on each; DCP writes every tensor once) loads into
    2 FSDP2 processes, each keeping its shard, with exactly the weights and AdamW state DDP held."""
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    ddp.mkdir(), fsdp.mkdir()
    _run(TORCHRUN + [str(WORKER), str(ddp), "--parallel", "ddp", "--steps", "2"])
    checkpoint = ddp / "checkpoints" / "step-00000002"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["backend"] == "ddp"
    _run(TORCHRUN + [str(WORKER), str(fsdp), "--parallel", "fsdp", "--steps", "0", "--resume", str(checkpoint)])
    _assert_same_full_state(
        torch.load(fsdp / "loaded.pt", weights_only=True), torch.load(ddp / "saved.pt", weights_only=True)
    )
