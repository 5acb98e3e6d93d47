"""The pretraining recipe: configs, a short CPU run, checkpoints, and SIGKILL-and-resume."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genolm.errors import ConfigError, InputDataError
from genolm.training import checkpoint as ckpt
from genolm.training.config import (
    PretrainConfig,
    config_from_dict,
    dump_yaml,
    load_yaml,
    parse_config,
)
from genolm.training.guards import FiniteGuard, TrainingDivergedError
from genolm.training.metrics import THROUGHPUT_WARMUP_STEPS, read_log

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_CONFIGS = (  # the configs of recipes/pretrain.py
    "quickstart", "debug", "agront-1b", "nt-v2-500m", "genolm-20b-tpu-v4", "genolm-5b-gpu",
)
CONFIGS = [REPO / "recipes" / "configs" / f"{name}.yaml" for name in PRETRAIN_CONFIGS]
DEBUG = REPO / "recipes" / "configs" / "debug.yaml"


def _load_recipe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pretrain_recipe", REPO / "recipes" / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_parse(path):
    config = config_from_dict(load_yaml(path), origin=str(path))
    from genolm import GenoLMConfig

    model_config = GenoLMConfig.from_preset(config.model, **config.model_overrides)
    assert config.max_tokens + 1 <= model_config.max_tokens, path


def test_cli_overrides(tmp_path):
    config = parse_config(
        ["--config", str(DEBUG), "--max_steps", "3", "--lr", "3e-4", "--model_overrides.hidden_size", "32",
         "--data_options.block_size=2000", "--resume", "--sources", "[a.fa, b.fa]"]
    )
    assert config.max_steps == 3 and config.lr == 3e-4 and config.resume is True
    assert config.model_overrides == {"hidden_size": 32}
    assert config.data_options["block_size"] == 2000 and config.data_options["validation_fraction"] == 0.1
    assert config.sources == ["a.fa", "b.fa"]
    assert parse_config(["--resume", "false"]).resume is False
    # A dump reloads to the same config.
    (tmp_path / "c.yaml").write_text(dump_yaml(config))
    assert config_from_dict(load_yaml(tmp_path / "c.yaml")) == config


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_step: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*unknown key.*max_step"):
        parse_config(["--config", str(bad)])
    with pytest.raises(ValueError, match="max_steps"):
        config_from_dict({"max_steps": "many"})
    with pytest.raises(ConfigError, match=r"--parallel: 'mpi' is not one of"):
        parse_config(["--parallel", "mpi"])
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        PretrainConfig(batch_size=0)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max_steps", "-5"], "max_steps must be >= 1, got -5"),
        (["--max_steps", "0"], "max_steps must be >= 1, got 0"),
        (["--batch_size", "0"], "batch_size must be >= 1, got 0"),
        (["--lr", "0"], "lr must be a finite number > 0, got 0.0"),
        (["--lr", "nan"], "lr must be a finite number > 0, got nan"),
        (["--lr", "inf"], "lr must be a finite number > 0, got inf"),
        (["--init_lr=-1e-4"], "init_lr must be a finite number >= 0, got -0.0001"),
        (["--mlm_probability", "1.5"], r"mlm_probability must be in \[0, 1\], got 1.5"),
        (["--mlm_probability", "0"], "mlm_probability must be > 0"),
        (["--adam_beta2", "-0.1"], r"adam_beta2 must be in \[0, 1\], got -0.1"),
        (["--mask_replace_prob", "0.9", "--random_replace_prob", "0.2"], "mask_replace_prob \\+ random_replace_prob"),
        (["--eval_every", "-1"], "eval_every must be >= 0, got -1"),
        (["--decay", "exp"], "decay='exp'; expected one of sqrt, cosine, linear, constant"),
    ],
)
def test_out_of_range_values_are_config_errors(flags, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        parse_config(["--config", str(DEBUG), *flags])


def test_model_override_typo_names_the_closest_field(tmp_path):
    with pytest.raises(ConfigError, match=r"model_overrides: 'num_hiden_layers' is not a GenoLMConfig field; "
                       r"did you mean 'num_hidden_layers'\?"):
        parse_config(["--config", str(DEBUG), "--model_overrides.num_hiden_layers", "3"])
    (tmp_path / "typo.yaml").write_text("model: tiny\nmodel_overrides:\n  hidden_sise: 64\n")
    with pytest.raises(ConfigError, match="'hidden_sise' is not a GenoLMConfig field; did you mean 'hidden_size'"):
        parse_config(["--config", str(tmp_path / "typo.yaml")])
    config = parse_config(["--config", str(DEBUG), "--model_overrides.num_hidden_layers", "3",
                           "--model_overrides.tie_word_embeddings", "true"])
    assert config.model_overrides == {"num_hidden_layers": 3, "tie_word_embeddings": True}


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
def _tiny(tokenizer):
    from genolm import GenoLMConfig, GenoLMForMaskedLM

    torch.manual_seed(0)
    return GenoLMForMaskedLM(GenoLMConfig.from_preset("tiny"))


def test_checkpoint_roundtrip_and_pruning(tmp_path, tokenizer):
    from transformers import AutoModelForMaskedLM

    import genolm  # noqa: F401  (registers the Auto classes)

    model = _tiny(tokenizer)
    for step in (1, 2, 3):
        path = ckpt.save_checkpoint(tmp_path, step, model, tokenizer, {"step": step, "rng": ckpt.rng_state()}, keep_last=2)
    assert path.name == "step-00000003"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    assert not list(tmp_path.glob(".tmp-*"))
    reloaded = AutoModelForMaskedLM.from_pretrained(path)
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert ckpt.load_training_state(path)["step"] == 3
    manifest = json.loads((path / ckpt.MANIFEST_NAME).read_text())
    assert {"model.safetensors", "config.json", "tokenizer.json", ckpt.TRAINING_STATE_NAME} <= set(manifest["files"])


def test_truncated_checkpoint_is_skipped(tmp_path, tokenizer):
    model = _tiny(tokenizer)
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, step, model, tokenizer, {"step": step})
    newest = tmp_path / "step-00000002"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a half-written file
    with pytest.warns(UserWarning, match=r"step-00000002.*model.safetensors.*truncated"):
        assert ckpt.latest_checkpoint(tmp_path).name == "step-00000001"
    # A save interrupted before its manifest (and its temporary folder) are never picked up either.
    (tmp_path / "step-00000003").mkdir()
    (tmp_path / ".tmp-step-00000004-1").mkdir()
    with pytest.warns(UserWarning, match="step-00000003.*did not finish"):
        assert ckpt.latest_checkpoint(tmp_path).name == "step-00000001"


def test_altered_checkpoint_is_refused_by_its_hash(tmp_path, tokenizer):
    """Same-size garbage in training_state.pt passes the size check but not the sha256 one: the run resumes
    from the previous checkpoint (as for an incomplete one), with a warning naming the file."""
    model = _tiny(tokenizer)
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, step, model, tokenizer, {"step": step})
    newest = tmp_path / "step-00000002"
    manifest = json.loads((newest / ckpt.MANIFEST_NAME).read_text())
    for name, digest in manifest["sha256"].items():
        assert digest == hashlib.sha256((newest / name).read_bytes()).hexdigest(), name
    assert ckpt.latest_checkpoint(tmp_path) == newest

    state = newest / ckpt.TRAINING_STATE_NAME
    state.write_bytes(bytes(255 - b for b in state.read_bytes()))  # same size, other bytes
    assert ckpt.checkpoint_problem(newest) is None  # sizes still match
    assert ckpt.checkpoint_problem(newest, verify_hashes=True) == (
        "training_state.pt does not match its sha256 in checkpoint.json (corrupted or altered)"
    )
    with pytest.warns(UserWarning, match=r"skipping corrupted checkpoint .*step-00000002: training_state.pt"):
        assert ckpt.latest_checkpoint(tmp_path).name == "step-00000001"
    state.unlink()
    (tmp_path / "step-00000001" / "model.safetensors").write_bytes(b"\0" * manifest["files"]["model.safetensors"])
    with pytest.warns(UserWarning, match=r"step-00000001: model.safetensors does not match"):
        assert ckpt.latest_checkpoint(tmp_path) is None


class _Runs:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_training_state_is_loaded_without_running_code(tmp_path, capsys):
    model = _tiny(tokenizer=None)
    path = ckpt.save_checkpoint(tmp_path, 1, model, _Tokenizer(), {"step": 1, "rng": ckpt.rng_state()})
    state = ckpt.load_training_state(path)
    assert state["step"] == 1 and state["rng"]["numpy"][0] == "MT19937"
    torch.save({"step": 1, "payload": _Runs()}, path / ckpt.TRAINING_STATE_NAME)
    with pytest.raises(InputDataError, match=r"training_state.pt: refused: it holds objects other than tensors.*"
                       r"\(a reference to print\)"):
        ckpt.load_training_state(path)
    assert "code ran" not in capsys.readouterr().out


class _Tokenizer:
    def save_pretrained(self, folder):
        (Path(folder) / "tokenizer.json").write_text("{}")


def test_checkpoint_of_non_finite_weights_is_refused(tmp_path, tokenizer):
    model = _tiny(tokenizer)
    with torch.no_grad():
        model.genolm.embeddings.word_embeddings.weight[3, 0] = float("inf")
    with pytest.raises(TrainingDivergedError, match=r"checkpoint step-00000004: parameter "
                       r"'genolm.embeddings.word_embeddings.weight' holds NaN or infinite values; not saved"):
        ckpt.save_checkpoint(tmp_path, 4, model, tokenizer, {"step": 4})
    assert not list(tmp_path.iterdir())


def test_finite_guard_reports_the_first_bad_step():
    guard = FiniteGuard("cpu", step=10, hint="try a lower --lr")
    guard.update(torch.tensor(2.5), torch.tensor(0.7))
    guard.check("the checkpoint of step 11")  # finite: nothing
    guard.update(torch.tensor(float("nan")), torch.tensor(0.5))
    guard.update(torch.tensor(1.0), torch.tensor(float("inf")))
    with pytest.raises(TrainingDivergedError, match=r"^training diverged at step 12: loss nan, gradient norm 0.5; "
                       r"stopped before the checkpoint of step 13; try a lower --lr$"):
        guard.check("the checkpoint of step 13")
    # The gradient norm alone, and a divergence seen only by another process (the reduced flag).
    guard = FiniteGuard("cpu")
    guard.update(torch.tensor(1.0), torch.tensor(float("inf")))
    with pytest.raises(TrainingDivergedError, match=r"step 1: loss 1, gradient norm inf"):
        guard.check()
    calm = FiniteGuard("cpu")
    calm.update(torch.tensor(1.0), 0.3)
    with pytest.raises(TrainingDivergedError, match="on another process"):
        calm.check(reduce=lambda flag: (flag + 1.0) / 2)  # the mean over two processes, one of them diverged


# --------------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------------
def test_diverged_run_stops_before_its_checkpoint(tmp_path):
    """--lr 1e6 makes the loss NaN at step 2: the run exits 2 with one line before checkpoint 2 is written;
    the checkpoint of step 1 stays and holds finite weights; no NaN is logged."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    command = [sys.executable, str(REPO / "recipes" / "pretrain.py"), *_debug_args(
        out, "--lr", "1e6", "--init_lr", "1e6", "--max_steps", "6", "--checkpoint_every", "1", "--log_every", "3",
        "--keep_checkpoints", "2")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pretrain.py: error: training diverged at step 2: loss nan, gradient norm nan; "
                           "stopped before the checkpoint of step 2; try a lower --lr (now 1e+06)"), done.stderr
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step-00000001"]
    weights = load_file(out / "checkpoints" / "step-00000001" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    log = out / "log.jsonl"
    assert not log.exists() or not [r for r in read_log(log) if "loss" in r]  # step 3's line never came

def _debug_args(out: Path, *extra: str) -> list[str]:
    return ["--config", str(DEBUG), "--output_dir", str(out), *extra]


def test_debug_run_logs_and_checkpoints(tmp_path, capsys):
    recipe = _load_recipe()
    summary = recipe.main(
        _debug_args(tmp_path, "--max_steps", "6", "--checkpoint_every", "3", "--fill_mask_example", "true",
                    "--report_to", "tensorboard")
    )
    records = [r for r in read_log(tmp_path / "log.jsonl") if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for record in records:
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu"} <= set(record)
        assert record["loss"] > 0
        # The first (compiling) steps are not measured; later windows are.
        if record["step"] <= THROUGHPUT_WARMUP_STEPS:
            assert record["tokens_per_s"] is None and record["mfu"] is None
        else:
            assert record["tokens_per_s"] > 0 and record["mfu"] > 0
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step-00000003", "step-00000006"]
    # The saved model is what downstream users load: no training-loop switch in its config, and a tokenizer
    # that truncates to the model's positions.
    from genolm import GenoLMConfig

    step_dir = tmp_path / "checkpoints" / "step-00000006"
    assert "sparse_prediction" not in json.loads((step_dir / "config.json").read_text())
    tokenizer_config = json.loads((step_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == GenoLMConfig.from_pretrained(step_dir).max_tokens
    assert summary["checkpoint"].endswith("step-00000006")
    assert summary["val_loss_before"] > 0 and summary["val_loss_after"] > 0
    out = capsys.readouterr().out
    assert "validation perplexity:" in out and "fill-mask" in out
    assert list(tmp_path.rglob("events.out.tfevents.*")), "no TensorBoard event file"


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    _load_recipe().main(_debug_args(tmp_path, "--max_steps", "2", "--checkpoint_every", "0", "--report_to", "wandb"))
    assert list(tmp_path.rglob("offline-run-*")), "no offline wandb run recorded"


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"run ended (code {process.returncode}) before {path} appeared")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.005)


def test_sigkill_and_resume_gives_identical_losses(tmp_path, capsys):
    """A run killed with SIGKILL right after its step-4 checkpoint, then resumed, logs the same per-step
    losses as an uninterrupted run."""
    common = ["--max_steps", "10", "--checkpoint_every", "4", "--keep_checkpoints", "5", "--max_tokens", "127",
              "--batch_size", "8"]
    reference = tmp_path / "reference"
    _load_recipe().main(_debug_args(reference, *common))
    expected = {r["step"]: r["loss"] for r in read_log(reference / "log.jsonl") if "loss" in r}
    assert sorted(expected) == list(range(1, 11))

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(REPO / "recipes" / "pretrain.py"), *_debug_args(killed, *common)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(killed / "checkpoints" / "step-00000004", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    partial = [r["step"] for r in read_log(killed / "log.jsonl") if "loss" in r]
    assert max(partial) < 10

    with pytest.warns(UserWarning, match=rf"taking over the lock of run pid {process.pid}"):  # it died holding it
        _load_recipe().main(_debug_args(killed, *common, "--resume"))  # in this process: the state is all on disk
    assert "resumed from" in capsys.readouterr().out
    got = {r["step"]: r["loss"] for r in read_log(killed / "log.jsonl") if "loss" in r}
    assert sorted(got) == list(range(1, 11))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step


@pytest.mark.parametrize("preset", ["tiny", "nt-v2-50m"])
def test_flops_per_token_counts_the_model_matmuls(preset):
    """FLOPs/token against a count from the instantiated model: 2 x (weights of every linear layer) plus
    the attention score and value products, x3 for training; the sparse head scales only the LM head."""
    from genolm import GenoLMConfig, GenoLMForMaskedLM
    from genolm.training import flops_per_token

    config = GenoLMConfig.from_preset(preset, num_hidden_layers=2)
    model = GenoLMForMaskedLM(config)
    layer_weights = sum(m.weight.numel() for m in model.genolm.encoder.modules() if isinstance(m, torch.nn.Linear))
    head_weights = sum(m.weight.numel() for m in model.lm_head.modules() if isinstance(m, torch.nn.Linear))
    seq = 101
    attention = 4 * seq * config.hidden_size * config.num_hidden_layers
    assert flops_per_token(config, seq, training=False) == 2 * layer_weights + attention + 2 * head_weights
    assert flops_per_token(config, seq) == 3 * (2 * layer_weights + attention + 2 * head_weights)
    sparse = flops_per_token(config, seq, lm_head_fraction=0.15, training=False)
    assert sparse == pytest.approx(2 * layer_weights + attention + 0.3 * head_weights)


@pytest.mark.parametrize("soft_mask_weight", [1.0, 0.5])
def test_accumulated_step_loss_is_the_mean_over_all_masked_tokens(tmp_path, monkeypatch, soft_mask_weight):
    """With gradient accumulation the logged (and differentiated) loss is the sum of the step's token losses over
    its micro-batches divided by its masked tokens (their weights with soft-masking), not a mean of
    micro-batch means."""
    import torch.nn.functional as F

    from genolm import GenoLMForMaskedLM

    seen = []
    forward = GenoLMForMaskedLM.forward

    def recording(self, *args, **kwargs):
        output = forward(self, *args, **kwargs)
        if self.training:
            seen.append((output.logits.detach().float(), kwargs))
        return output

    monkeypatch.setattr(GenoLMForMaskedLM, "forward", recording)
    collated = []
    from genolm.training import MLMCollator

    call = MLMCollator.__call__

    def keep(self, rows):
        batch = call(self, rows)
        collated.append(batch)
        return batch

    monkeypatch.setattr(MLMCollator, "__call__", keep)
    _load_recipe().main(
        _debug_args(tmp_path, "--max_steps", "1", "--gradient_accumulation_steps", "3", "--checkpoint_every", "0",
                    "--soft_mask_weight", str(soft_mask_weight), "--eval_batches", "1")
    )
    logged = [r for r in read_log(tmp_path / "log.jsonl") if "loss" in r][0]["loss"]
    assert len(seen) == 3
    # The training batches are the collated ones whose masked ids the model saw, in order.
    batches = [next(b for b in collated if torch.equal(b["input_ids"], kwargs["input_ids"])) for _, kwargs in seen]
    total, weight, means = 0.0, 0.0, []
    assert all(("loss_weights" in b) == (soft_mask_weight != 1.0) for b in batches)
    for (logits, _), batch in zip(seen, batches):
        labels = batch["labels"]
        selected = labels != -100
        token_weights = batch.get("loss_weights", torch.ones(labels.shape))[selected]
        sparse_logits = logits if logits.dim() == 2 else logits[selected]
        losses = F.cross_entropy(sparse_logits, labels[selected], reduction="none")
        total += float((losses * token_weights).sum())
        weight += float(token_weights.sum())
        means.append(float((losses * token_weights).sum() / token_weights.sum()))
    counts = [int((b["labels"] != -100).sum()) for b in batches]
    assert len(set(counts)) > 1, counts  # micro-batches with different masked-token counts
    assert logged == pytest.approx(total / weight, rel=1e-5)
    assert abs(logged - sum(means) / 3) > 1e-6  # what averaging micro-batch means would have logged


def test_throughput_meter_skips_warm_up_and_pauses():
    from genolm.training.metrics import ThroughputMeter

    now = [0.0]
    meter = ThroughputMeter(warmup_steps=2, clock=lambda: now[0])
    for seconds in (30.0, 5.0):  # compiling steps
        now[0] += seconds
        meter.step(1000)
        assert meter.rate() is None
    meter.reset()  # a log line during warm-up does not open a window early
    now[0] += 1.0
    meter.step(1000)
    with meter.paused():  # evaluation / checkpoint
        now[0] += 50.0
    now[0] += 1.0
    meter.step(1000)
    assert meter.rate() == pytest.approx(2000 / 2.0)
    meter.reset()
    assert meter.rate() is None
    now[0] += 4.0
    meter.step(1000)
    assert meter.rate() == pytest.approx(1000 / 4.0)


@pytest.mark.parametrize(
    "raw, kind, peak",
    [
        ("TPU v4", "tpu-v4", 275e12),
        ("TPU v5 lite", "tpu-v5e", 197e12),
        ("TPU v5e", "tpu-v5e", 197e12),
        ("TPU v5", "tpu-v5p", 459e12),  # PJRT's name for v5p
        ("TPU v5p", "tpu-v5p", 459e12),
        ("TPU v6 lite", "tpu-v6e", 918e12),
        ("TPU v6e", "tpu-v6e", 918e12),
        ("v5litepod-16", "tpu-v5e", 197e12),
        ("v5p-128", "tpu-v5p", 459e12),
        ("v6e-8", "tpu-v6e", 918e12),
        ("v5litepod", "tpu-v5e", 197e12),
        ("v4", "tpu-v4", 275e12),
        ("v5", None, None),
        ("NVIDIA A100-SXM4-80GB", "a100", 312e12),
        ("NVIDIA H100 80GB HBM3", "h100-sxm", 989e12),
        ("NVIDIA H100 PCIe", "h100-pcie", 756e12),
        ("NVIDIA H200", "h200", 989e12),
        ("NVIDIA GH200 480GB", "gh200", 989e12),
        ("NVIDIA B200", "b200", 2250e12),
        ("NVIDIA L4", "l4", 121e12),
        ("NVIDIA L40S", "l40s", 362e12),
        ("tpu-v5e", "tpu-v5e", 197e12),
        ("tpu-v5", None, None),  # a generation number alone: v5e or v5p
        ("Tesla T4", None, None),
        (None, None, None),
    ],
)
def test_device_kind_maps_runtime_names_to_the_peak_table(raw, kind, peak):
    from genolm.training.flops import device_kind, peak_flops

    assert device_kind(raw) == kind
    assert (peak_flops(kind) if kind else None) == peak


def test_second_run_into_a_used_folder_needs_resume_or_overwrite(tmp_path):
    """A second run into a used output_dir once pruned its checkpoints against the old run's higher steps,
    printed a deleted checkpoint and overwrote log.jsonl: it is refused now, `--overwrite` starts clean, and a
    run in progress keeps others out."""
    import hashlib

    from genolm.errors import ConfigError, OutputPathError
    from genolm.outputs import run_lock

    recipe = _load_recipe()
    out = tmp_path / "run"
    recipe.main(_debug_args(out, "--max_steps", "6", "--checkpoint_every", "3"))
    log_digest = hashlib.sha256((out / "log.jsonl").read_bytes()).hexdigest()
    old = [p.name for p in ckpt.list_checkpoints(out / "checkpoints")]
    assert old == ["step-00000003", "step-00000006"]

    with pytest.raises(OutputPathError, match=rf"output_dir {out} holds another run \(log\.jsonl, checkpoints\).*--resume.*--overwrite"):
        recipe.main(_debug_args(out, "--max_steps", "2", "--checkpoint_every", "1"))
    assert hashlib.sha256((out / "log.jsonl").read_bytes()).hexdigest() == log_digest
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == old
    with pytest.raises(ConfigError, match="pass one"):
        recipe.main(_debug_args(out, "--resume", "--overwrite"))

    with run_lock(out):  # a run in progress
        with pytest.raises(OutputPathError, match=rf"{out} is in use by another run \(host \S+, pid {os.getpid()}"):
            recipe.main(_debug_args(out, "--overwrite"))
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == old

    summary = recipe.main(_debug_args(out, "--max_steps", "2", "--checkpoint_every", "1", "--overwrite"))
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step-00000001", "step-00000002"]
    assert Path(summary["checkpoint"]).is_dir() and summary["checkpoint"].endswith("step-00000002")
    assert [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r] == [1, 2]
    assert not (out / ".genolm.lock").exists()


def test_overwrite_keeps_an_init_checkpoint_inside_the_old_run(tmp_path):
    """--overwrite would delete checkpoints/ while --init_from points into it: refused, nothing removed."""
    from genolm.errors import OutputPathError

    recipe = _load_recipe()
    out = tmp_path / "run"
    recipe.main(_debug_args(out, "--max_steps", "2", "--checkpoint_every", "2"))
    init = out / "checkpoints" / "step-00000002"
    with pytest.raises(OutputPathError, match=rf"--overwrite would remove {out}/checkpoints, which holds the input init_from"):
        recipe.main(_debug_args(out, "--overwrite", "--init_from", str(init)))
    assert ckpt.checkpoint_problem(init) is None


@pytest.mark.slow
def test_compiled_run_matches_the_eager_run(tmp_path):
    """--compile true (each layer torch.compile-d by the runtime): the same losses as the eager run within 1e-4,
    and a checkpoint under the model's own parameter names."""
    recipe = _load_recipe()
    losses = {}
    for compile_layers in ("false", "true"):
        out = tmp_path / compile_layers
        recipe.main(_debug_args(out, "--max_steps", "3", "--checkpoint_every", "3", "--compile", compile_layers))
        losses[compile_layers] = [r["loss"] for r in read_log(out / "log.jsonl") if "loss" in r]
    assert len(losses["true"]) == 3
    assert losses["true"] == pytest.approx(losses["false"], abs=1e-4)
    from safetensors.torch import load_file

    names = set(load_file(tmp_path / "true" / "checkpoints" / "step-00000003" / "model.safetensors"))
    assert names == set(load_file(tmp_path / "false" / "checkpoints" / "step-00000003" / "model.safetensors"))
    assert not any("_orig_mod" in name for name in names)
