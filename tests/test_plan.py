"""The memory/time plan: exact parameter counts, model-state bytes, the activation estimate against a measured
training step, the `genolm plan` command and the pretraining recipe's refusal of a plan that does not fit."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genolm import GenoLMConfig, GenoLMForMaskedLM
from genolm.cli import main as cli_main
from genolm.configuration_genolm import PRESETS
from genolm.errors import ConfigError
from genolm.training.config import PretrainConfig
from genolm.training.flops import PEAK_FLOPS, flops_per_token
from genolm.training.plan import (
    DEVICES,
    GiB,
    activation_bytes,
    layer_parameter_count,
    measure_training_step,
    model_state_bytes,
    parameter_count,
    parse_devices,
    plan_pretraining,
)

REPO = Path(__file__).resolve().parents[1]
DEBUG = REPO / "recipes" / "configs" / "debug.yaml"
TPU_CONFIG = REPO / "recipes" / "configs" / "genolm-20b-tpu-v4.yaml"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


# --- parameter counts and model state ------------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(PRESETS))
def test_parameter_count_equals_a_meta_device_build(preset):
    config = GenoLMConfig.from_preset(preset)
    with torch.device("meta"):
        model = GenoLMForMaskedLM(config)
    assert parameter_count(config) == sum(p.numel() for p in model.parameters())
    layer = model.genolm.encoder.layers[0]
    assert layer_parameter_count(config) == sum(p.numel() for p in layer.parameters())


def test_big_presets_have_the_stated_shape_rules_and_sizes():
    for name, billions in (("genolm-5b", 5.0), ("genolm-20b", 20.2)):
        config = GenoLMConfig.from_preset(name)
        assert config.hidden_size // config.num_attention_heads == 128 and config.num_attention_heads % 8 == 0
        assert config.intermediate_size == 4 * config.hidden_size and config.ffn_type == "swiglu"
        assert config.vocab_layout == "nt-v2" and config.max_position_embeddings == 2050
        assert 90 <= config.hidden_size / config.num_hidden_layers <= 110
        assert round(parameter_count(config) / 1e9, 1) == billions


def test_model_state_bytes_equal_the_sums_over_a_trained_model():
    """Parameters, gradients and AdamW moments of a built model after one step, byte for byte."""
    from genolm.training.optim import build_optimizer

    config = GenoLMConfig.from_preset("nt-v2-50m", hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                      num_hidden_layers=2)
    model = GenoLMForMaskedLM(config)
    optimizer = build_optimizer(model, 1e-4, 0.1)
    ids = torch.randint(5, config.vocab_size, (2, 17))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    params = list(model.parameters())
    moments = [v for p in params for k, v in optimizer.state[p].items() if k in ("exp_avg", "exp_avg_sq")]
    memory = model_state_bytes(config, "none", 1, bf16=False)
    assert memory["parameters"] == sum(p.numel() * p.element_size() for p in params)
    assert memory["gradients"] == sum(p.grad.numel() * p.grad.element_size() for p in params)
    assert memory["optimizer_state"] == sum(m.numel() * m.element_size() for m in moments)
    # Sharded over 8 devices each holds an eighth; bf16 autocast in one process adds the cached bf16 weights.
    sharded = model_state_bytes(config, "fsdp", 8, bf16=True)
    assert sharded["optimizer_state"] == memory["optimizer_state"] / 8 and "gathered_layers" in sharded
    assert model_state_bytes(config, "none", 1, bf16=True)["bf16_weight_copies"] == 2 * len(
        torch.nn.utils.parameters_to_vector(params))


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_activation_estimate_is_within_25_percent_of_a_measured_step(gradient_checkpointing):
    """Peak tensor memory of a real CPU training step (MemTracker) against the plan, total and activations."""
    torch.set_num_threads(1)
    config = GenoLMConfig.from_preset("nt-v2-50m", hidden_size=64, num_attention_heads=4, intermediate_size=256,
                                      num_hidden_layers=2)
    batch, seq_len = 4, 257
    measured = measure_training_step(config, batch, seq_len, gradient_checkpointing=gradient_checkpointing)
    state = model_state_bytes(config, "none", 1, bf16=False)
    activations = activation_bytes(config, batch, seq_len, bf16=False, sparse=True,
                                   gradient_checkpointing=gradient_checkpointing)
    estimated_total = sum(state.values()) + sum(activations.values())
    assert abs(estimated_total - measured["peak"]) / measured["peak"] < 0.25
    # What the step adds to parameters and moments: activations, workspace and gradients.
    # (AdamW's per-parameter step counters are the few bytes more)
    assert measured["static"] == pytest.approx(state["parameters"] + state["optimizer_state"], rel=1e-3)
    measured_dynamic = measured["peak"] - measured["static"]
    estimated_dynamic = sum(activations.values()) + state["gradients"]
    assert abs(estimated_dynamic - measured_dynamic) / measured_dynamic < 0.25


def test_tensor_parallel_and_checkpointing_change_activations_as_stated():
    config = GenoLMConfig.from_preset("genolm-5b")
    plain = activation_bytes(config, 1, 2049, bf16=True)["activations"]
    checkpointed = activation_bytes(config, 1, 2049, bf16=True, gradient_checkpointing=True)["activations"]
    assert checkpointed < plain / 5
    # Splitting layers over 2 devices with the same global batch: each device sees 2 sequences, half of the
    # split activations each, and all of the replicated ones: more than 1 sequence alone, less than 2.
    split2 = activation_bytes(config, 1, 2049, bf16=True, tensor_parallel=2)["activations"]
    assert plain < split2 < 2 * plain


# --- devices and the plan ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, name, count",
    [("tpu-v4:512", "tpu-v4", 512), ("H100:16", "h100", 16), ("h100-sxm:8", "h100", 8), ("cpu", "cpu", 1)],
)
def test_device_specs(spec, name, count):
    kind, number = parse_devices(spec)
    assert (kind.name, number) == (name, count)


@pytest.mark.parametrize(
    "spec, message",
    [("x100:8", "unknown device 'x100'"), ("h100:0", "whole number >= 1"), ("h100:eight", "whole number >= 1")],
)
def test_bad_device_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_devices(spec)


def test_device_table_uses_the_peak_flops_table():
    for kind in DEVICES.values():
        assert kind.flops_key == "cpu" or kind.flops_key in PEAK_FLOPS
    assert DEVICES["tpu-v4"].memory == 32 * GiB and DEVICES["h200"].memory == 141 * GiB


def test_plan_time_and_tokens_follow_the_flops_table():
    cfg = PretrainConfig(model="genolm-20b", max_tokens=2048, batch_size=1, gradient_checkpointing=True,
                         parallel="xla_fsdp", mixed_precision="bf16")
    plan = plan_pretraining(cfg, "tpu-v4:512", mfu=0.5, tokens=1e9)
    config = GenoLMConfig.from_preset("genolm-20b")
    assert plan.tokens_per_step == 512 * 2049 and plan.sparse is False
    assert plan.flops_per_token == flops_per_token(config, 2049, 1.0)
    assert plan.step_seconds == pytest.approx(512 * 2049 * plan.flops_per_token / (275e12 * 512 * 0.5))
    assert plan.total_seconds == pytest.approx(plan.step_seconds * 1e9 / (512 * 2049))
    assert plan.memory["parameters"] == 4 * parameter_count(config) / 512
    assert plan.fits
    with pytest.raises(ConfigError, match="tensor_parallel=3 does not divide the 512 devices"):
        plan_pretraining(cfg, "tpu-v4:512", tensor_parallel=3)


# --- the command line ----------------------------------------------------------------------------------------


def test_plan_command_prints_a_table_and_json(capsys):
    assert cli_main(["plan", "--config", str(TPU_CONFIG), "--devices", "tpu-v4:512", "--tokens", "300e9"]) == 0
    table = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in table.splitlines()[3:] if line.startswith("    ")}
    parts = ("parameters", "gradients", "optimizer", "gathered", "activations", "backward")
    assert set(lines) == {*parts, "total"}

    def gib(words):
        return float(words[-2]) * (1 if words[-1] == "GiB" else 2**-10)

    total = gib(lines["total"][:3])
    assert total == pytest.approx(sum(gib(lines[p]) for p in parts), abs=0.02)
    assert "fits: yes" in table and "tokens in 7.8 days" in table

    assert cli_main(["plan", "--config", str(TPU_CONFIG), "--devices", "tpu-v4:512", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["parameters"] == 20_202_925_067 and result["device"] == "tpu-v4"
    assert result["total_bytes"] == pytest.approx(sum(result["memory_bytes"].values()))
    assert result["total_bytes"] / GiB == pytest.approx(total, abs=0.01)
    assert result["fits"] and result["tokens_per_step"] == 512 * 2049


def test_plan_command_says_what_to_change_when_it_does_not_fit(capsys):
    assert cli_main(["plan", "--config", str(TPU_CONFIG), "--devices", "tpu-v4:512", "--no-gradient-checkpointing",
                     "--memory-limit-gib", "16"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("fits: no: the memory plan needs ") and "gradient_checkpointing: true" in last
    assert "the limit on tpu-v4 is 16.00 GiB" in last


@pytest.mark.parametrize(
    "args, message",
    [
        (["--devices", "x100:8"], "devices 'x100:8': unknown device 'x100'"),
        (["--devices", "h100:8", "--config", "missing.yaml"], "--config 'missing.yaml': no such file, nor a preset"),
        (["--devices", "h100:8", "--mfu", "2"], "mfu must be in (0, 1], got 2.0"),
    ],
)
def test_plan_command_errors_are_one_line_and_exit_2(args, message, capsys):
    argv = ["plan", "--config", str(TPU_CONFIG), *args] if "--config" not in args else ["plan", *args]
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"genolm plan: error: {message}") and not captured.out


def test_plan_help_imports_nothing_heavy():
    code = (
        "import contextlib, io, sys\nfrom genolm.cli import main\n"
        "out = io.StringIO()\nwith contextlib.redirect_stdout(out):\n"
        "    try:\n        main(['plan', '--help'])\n    except SystemExit:\n        pass\n"
        "assert '--devices' in out.getvalue()\n"
        "print(sorted(m for m in ('torch', 'transformers', 'psutil') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- the pretraining recipe ----------------------------------------------------------------------------------


def _load_recipe():
    spec = importlib.util.spec_from_file_location("pretrain_recipe_plan", REPO / "recipes" / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretraining_stops_before_building_a_model_that_does_not_fit(tmp_path, monkeypatch, capsys):
    recipe = _load_recipe()

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(recipe.GenoLMForMaskedLM, "__init__", no_model)
    with pytest.raises(ConfigError, match=r"the memory plan needs .* but the limit on cpu is 1\.0 MiB"):
        recipe.main(["--config", str(DEBUG), "--output_dir", str(tmp_path / "run"), "--memory_limit_gib",
                     str(1 / 1024)])
    assert "memory plan: tiny (666,569 parameters) on 1 x cpu" in capsys.readouterr().out
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "log.jsonl").exists()


def test_pretraining_refusal_is_one_line_and_exit_2(tmp_path):
    command = [sys.executable, str(REPO / "recipes" / "pretrain.py"), "--config", str(DEBUG),
               "--output_dir", str(tmp_path / "run"), "--memory_limit_gib", "0.0001"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pretrain.py: error: the memory plan needs "), done.stderr
    assert "gradient_checkpointing: true" in lines[0] and "memory_limit_gib" in lines[0]


# --- the benchmark's XLA hand-off ----------------------------------------------------------------------------


def test_benchmark_reads_the_sharded_init_ratio(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("memory_plan_benchmark", REPO / "benchmarks" / "memory_plan.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    script = tmp_path / "sharded_init_memory.py"
    script.write_text('import json\nprint("building")\nprint(json.dumps({"peak_host_memory_ratio_meta": 1.25}))\n')
    monkeypatch.setattr(benchmark, "SHARDED_INIT", script)
    assert benchmark.sharded_init_ratio(sys.executable) == 1.25
    assert benchmark.sharded_init_ratio(None) is None
    monkeypatch.setattr(benchmark, "SHARDED_INIT", tmp_path / "absent.py")
    assert benchmark.sharded_init_ratio(sys.executable) is None


def test_a_cpu_plan_leaves_the_random_state_alone():
    """The plan measures the CPU's peak FLOP/s with random matrices before the model is initialised: the
    run's seeded random stream must not move (else a run's weights would depend on the measurement cache)."""
    import genolm.training.flops as flops

    flops._measured_cpu_peak = None
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    plan_pretraining(PretrainConfig(model="tiny"), "cpu:1", memory_limit=0)
    assert torch.equal(torch.random.get_rng_state(), before)
