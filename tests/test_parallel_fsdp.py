"""The shared runtime (genolm.parallel) on CPUs: the optimizer's weight-decay rule, the device/dtype
resolver, and FSDP2 (``fully_shard``) over 2 gloo processes under torchrun, which must train like one
process on the same global batch, write checkpoints that reload and, killed with SIGKILL, resume exactly;
tensor parallelism on a (dp, tp) mesh, which must train like one process too; models built on the meta
device and initialised in their shards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMForSequenceClassification
from genolm.errors import ConfigError
from genolm.parallel import resolve_backend, resolve_device, resolve_dtype, resolve_mixed_precision
from genolm.training.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "parallel_worker.py"
DEBUG = REPO / "recipes" / "configs" / "debug.yaml"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "ACCELERATE_USE_FSDP")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def _run(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


# ---------------------------------------------------------------------------------------------------------
# one optimizer rule, one device/dtype resolver
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", [GenoLMForMaskedLM, GenoLMForSequenceClassification])
def test_optimizer_decays_only_weight_matrices(model_class):
    model = model_class(GenoLMConfig.from_preset("tiny"))
    model.genolm.encoder.layers[0].ffn.up.weight.requires_grad_(False)  # frozen: in no group
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)
    decay, no_decay = optimizer.param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert decay["betas"] == (0.9, 0.98) and decay["eps"] == 1e-6 and decay["lr"] == 1e-3
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    # the rule written out on the names: biases, LayerNorms (1-D) and embedding tables do not decay
    expected_no_decay = {n for n, p in model.named_parameters() if p.dim() < 2 or "embeddings" in n}
    assert no_decay_names == expected_no_decay
    assert "genolm.embeddings.word_embeddings.weight" in no_decay_names
    assert "genolm.encoder.layers.0.attention.query.weight" in decay_names
    assert "genolm.encoder.layers.0.ffn.up.weight" not in decay_names | no_decay_names
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decay_names | no_decay_names == trainable and not decay_names & no_decay_names


def test_tied_decoder_is_an_embedding_and_listed_once():
    model = GenoLMForMaskedLM(GenoLMConfig.from_preset("tiny"))
    embedding = model.get_input_embeddings().weight
    model.get_output_embeddings().weight = embedding  # the decoder (a Linear) shares the embedding table
    decay, no_decay = build_optimizer(model, 1e-3, 0.1).param_groups
    assert sum(p is embedding for p in no_decay["params"]) == 1
    assert all(p is not embedding for p in decay["params"])


def test_device_and_dtype_resolver(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert resolve_dtype("bfloat16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ConfigError, match="dtype 'fp8': expected one of auto, float32, bfloat16, float16"):
        resolve_dtype("fp8")
    with pytest.raises(ConfigError, match="device 'gpu0'"):
        resolve_device("gpu0")
    assert resolve_mixed_precision("auto", "cpu") == "no"
    assert resolve_mixed_precision("auto", "cuda") == resolve_mixed_precision("auto", "TPU") == "bf16"
    assert resolve_mixed_precision("no", "cuda") == "no"
    with pytest.raises(ConfigError, match="parallel='mpi'; expected auto or one of none, ddp, fsdp, xla_fsdp"):
        resolve_backend("mpi")


def test_inference_modules_share_the_resolver():
    from genolm import embed
    from genolm.inference import scoring

    assert scoring.resolve_device is resolve_device and scoring.resolve_dtype is resolve_dtype
    assert embed.resolve_dtype is resolve_dtype


# ---------------------------------------------------------------------------------------------------------
# FSDP2 over 2 CPU processes (gloo)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlm", "cls"])
def test_fsdp2_trains_like_one_process_on_the_same_global_batch(tmp_path, model):
    """Losses and gradient norms of 3 AdamW steps under FSDP2 (2 processes, 4 rows each) equal those of one
    process on all 8 rows; parameters are sharded; the gathered export reloads on the CPU with the logits the
    sharded model computed, and the gathered optimizer state equals the single process's."""
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    single, sharded = tmp_path / "none", tmp_path / "fsdp"
    _run([sys.executable, str(WORKER), str(single), "--parallel", "none", "--model", model])
    _run(TORCHRUN + [str(WORKER), str(sharded), "--parallel", "fsdp", "--model", model])
    one, two = (json.loads((d / "report.json").read_text()) for d in (single, sharded))
    assert (one["backend"], one["num_processes"], two["backend"], two["num_processes"]) == ("none", 1, "fsdp", 2)
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["norms"] == pytest.approx(one["norms"], rel=1e-4)
    assert one["losses"][-1] < one["losses"][0]
    weights = {n: s for n, s in two["sharding"].items() if n.endswith(".weight")}
    assert weights and all(s == "(Shard(dim=0),) over mesh (2,)" for s in weights.values()), weights
    assert one["sharding"] == {}

    auto = AutoModelForMaskedLM if model == "mlm" else AutoModelForSequenceClassification
    reference = torch.load(single / "tensors.pt", weights_only=True)
    saved = torch.load(sharded / "tensors.pt", weights_only=True)
    # AdamW's first steps move every weight by about lr whatever the gradient's size, so float-level gradient
    # differences show in the logits at ~1e-4 after 3 steps
    torch.testing.assert_close(saved["logits"], reference["logits"], rtol=1e-3, atol=1e-3)
    reloaded = auto.from_pretrained(sharded / "export").eval()
    with torch.no_grad():
        logits = reloaded(input_ids=saved["batch"]["input_ids"], attention_mask=saved["batch"]["attention_mask"]).logits
    torch.testing.assert_close(logits, saved["logits"], rtol=1e-5, atol=1e-5)

    state_one, state_two = reference["optimizer"]["state"], saved["optimizer"]["state"]
    assert set(state_two) == set(state_one) == {n for n, _ in reloaded.named_parameters()}
    for name, moments in state_one.items():
        assert state_two[name]["exp_avg"].shape == moments["exp_avg"].shape  # full, not a shard
        torch.testing.assert_close(state_two[name]["exp_avg_sq"], moments["exp_avg_sq"], rtol=1e-3, atol=1e-9)


@pytest.mark.slow
def test_compiled_layers_under_fsdp2_train_like_eager_one_process(tmp_path):
    """rt.prepare(compile=True) under FSDP2 (each layer compiled, then sharded): the losses of one eager process
    on the same global batch, within 1e-4."""
    single, sharded = tmp_path / "none", tmp_path / "fsdp"
    _run([sys.executable, str(WORKER), str(single), "--parallel", "none"])
    _run(TORCHRUN + [str(WORKER), str(sharded), "--parallel", "fsdp", "--compile"])
    one, two = (json.loads((d / "report.json").read_text()) for d in (single, sharded))
    assert two["backend"] == "fsdp" and two["num_processes"] == 2
    assert two["losses"] == pytest.approx(one["losses"], abs=1e-4)
    assert two["norms"] == pytest.approx(one["norms"], rel=1e-3)


@pytest.mark.slow
def test_pretrain_recipe_under_fsdp2_checkpoints_and_resumes(tmp_path):
    """recipes/pretrain.py --parallel fsdp on 2 processes: trains, writes sharding.json and sharded checkpoints
    (one DCP file per process; the last one also the consolidated model, which reloads on the CPU), resumes on
    2 processes, then on 1 process (DCP reshards the model and optimizer state), which writes a consolidated
    checkpoint with the full optimizer state."""
    from transformers import AutoModelForMaskedLM

    import genolm  # noqa: F401

    out = tmp_path / "run"
    common = ["recipes/pretrain.py", "--config", str(DEBUG), "--checkpoint_every", "2",
              "--output_dir", str(out), "--report_to", "none"]  # fmt: skip
    done = _run(TORCHRUN + common + ["--parallel", "fsdp", "--max_steps", "2"])
    assert "backend fsdp on 2 x cpu (2 process(es))" in done.stdout
    sharding = json.loads((out / "sharding.json").read_text())
    assert sharding["genolm.encoder.layers.0.attention.query.weight"] == "(Shard(dim=0),) over mesh (2,)"
    _run(TORCHRUN + common + ["--parallel", "fsdp", "--max_steps", "4", "--resume", "true"])
    checkpoint = out / "checkpoints" / "step-00000004"
    assert sorted(p.name for p in (checkpoint / "dcp").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert {"process-00000.pt", "process-00001.pt", "model.safetensors"} <= {p.name for p in checkpoint.iterdir()}
    trainer = json.loads((checkpoint / "trainer_state.json").read_text())
    assert (trainer["backend"], trainer["step"], trainer["num_processes"], trainer["mesh_shape"]) == ("fsdp", 4, 2, [2])
    model = AutoModelForMaskedLM.from_pretrained(checkpoint).eval()
    assert type(model).__name__ == "GenoLMForMaskedLM"

    done = _run([sys.executable] + common + ["--parallel", "none", "--max_steps", "6", "--resume", "true"])
    assert f"resumed from {checkpoint} at step 4" in done.stdout
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] == r["loss"] and r["loss"] < 9 for r in losses)  # finite, near ln(4105) or below
    last = out / "checkpoints" / "step-00000006"
    state = torch.load(last / "training_state.pt", weights_only=False)
    assert state["backend"] == "none" and state["step"] == 6 and not (last / "dcp").exists()
    model = AutoModelForMaskedLM.from_pretrained(last)
    names = {n for n, _ in model.named_parameters()}
    assert set(state["optimizer"]["state"]) == names
    for name, param in model.named_parameters():
        assert state["optimizer"]["state"][name]["exp_avg"].shape == param.shape


@pytest.mark.slow
def test_finetune_recipe_under_fsdp2_matches_one_process(shared_data, tmp_path):
    """recipes/finetune.py --parallel fsdp on 2 processes x 4 rows: the first step's loss equals a single
    process's on the same 8 rows, and the saved best model reloads and reproduces the saved predictions."""
    import numpy as np
    import pandas as pd
    from transformers import AutoModelForSequenceClassification

    from genolm import GenoLMTokenizer
    from genolm.finetune import (
        Collator,
        EncodedDataset,
        LabelSpec,
        encode_split,
        load_records,
        predict,
        score,
    )

    data = shared_data / "pgb" / "poly_a.arabidopsis_thaliana" / "test.csv"
    common = ["recipes/finetune.py", "--train", str(data), "--validation", str(data), "--max_train_samples", "64",
              "--max_eval_samples", "21", "--max_steps", "3", "--eval_every", "3", "--log_every", "1",
              "--max_length", "12", "--mixed_precision", "no", "--lr", "1e-3"]  # fmt: skip
    single, sharded = tmp_path / "none", tmp_path / "fsdp"
    _run([sys.executable] + common + ["--batch_size", "8", "--parallel", "none", "--output_dir", str(single)])
    done = _run(TORCHRUN + common + ["--batch_size", "4", "--parallel", "fsdp", "--output_dir", str(sharded)])
    assert "x 1 x 2 sequences" in done.stdout and "backend fsdp" in done.stdout

    def first_loss(out: Path) -> float:
        return next(json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line)

    assert first_loss(sharded) == pytest.approx(first_loss(single), rel=1e-5)

    model = AutoModelForSequenceClassification.from_pretrained(sharded / "model").eval()
    tokenizer = GenoLMTokenizer.from_pretrained(sharded / "model")
    spec = LabelSpec.fit("classification", load_records(data).subset(range(64)))
    split = encode_split(load_records(data).subset(range(21)), spec, tokenizer, 12, "truncate")
    loader = torch.utils.data.DataLoader(
        EncodedDataset(split, with_window=True), batch_size=5, collate_fn=Collator(tokenizer.pad_token_id)
    )
    metrics, table = score(split, spec, predict(model, loader, split, "classification"))
    saved = pd.read_parquet(sharded / "predictions_validation.parquet")
    np.testing.assert_allclose(saved.filter(like="prob_").to_numpy(), table.filter(like="prob_").to_numpy(), atol=1e-5)
    reported = json.loads((sharded / "metrics.json").read_text())
    assert reported["validation"]["n"] == 21 and reported["best_step"] in (0, 3)


def _losses(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _resumed_at(stdout: str) -> int:
    """The step of the checkpoint a ``--resume`` run says it resumed from."""
    found = re.search(r"^resumed from \S+ at step (\d+)$", stdout, re.MULTILINE)
    assert found, stdout[-2000:]
    return int(found.group(1))


@pytest.mark.slow
def test_fsdp2_sigkill_and_resume_gives_identical_losses(tmp_path):
    """recipes/pretrain.py --parallel fsdp on 2 processes, every process and the launcher killed with SIGKILL
    right after the step-4 checkpoint, then resumed: each process restores its own stream position and
    generators, and the losses of the steps after the checkpoint it resumed from are those of an uninterrupted
    run. Then one process resumes the 2-process checkpoint: it says in one line that it cannot continue exactly
    and what it does instead, and trains on."""
    import shutil
    import signal
    import time

    import psutil

    recipe = ["recipes/pretrain.py", "--config", str(DEBUG), "--max_steps", "12", "--checkpoint_every", "4",
              "--keep_checkpoints", "5", "--shuffle_buffer", "8", "--report_to", "none"]  # fmt: skip
    common = recipe + ["--parallel", "fsdp"]
    reference = tmp_path / "reference"
    _run(TORCHRUN + common + ["--output_dir", str(reference)])
    expected = _losses(reference)
    assert sorted(expected) == list(range(1, 13))

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        TORCHRUN + common + ["--output_dir", str(killed)], cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    checkpoint = killed / "checkpoints" / "step-00000004"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert process.poll() is None, f"the run ended before its step-4 checkpoint:\n{process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no step-4 checkpoint in 300 s"
        time.sleep(0.005)
    launcher = psutil.Process(process.pid)
    workers = launcher.children(recursive=True)  # torchrun starts each in its own session
    for victim in [launcher, *workers]:  # the whole job at once, as when its host goes down
        victim.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert len(workers) == 2 and not alive, (workers, alive)
    one_process = tmp_path / "one-process"
    shutil.copytree(killed, one_process, ignore=shutil.ignore_patterns(".tmp-*", "*.lock"))

    resumed = _run(TORCHRUN + common + ["--output_dir", str(killed), "--resume", "true"])
    # 4, or a later checkpoint when this process was scheduled late on a busy host (a step takes milliseconds)
    start = _resumed_at(resumed.stdout)
    assert start < 12, f"killed after the last checkpoint: nothing left to compare\n{resumed.stdout[-2000:]}"
    got = _losses(killed)
    assert sorted(got) == list(range(1, 13))
    # exactly: the same processes run the same computations on bitwise the same weights, moments and batches
    assert [got[step] for step in range(start + 1, 13)] == [expected[step] for step in range(start + 1, 13)], (got, expected)

    done = _run([sys.executable] + recipe + ["--parallel", "none", "--output_dir", str(one_process), "--resume", "true"])
    warning = [line for line in done.stdout.splitlines() if line.startswith("warning: the checkpoint was written")]
    assert warning == [
        "warning: the checkpoint was written by 2 process(es), this run has 1: the training rows are split "
        "differently, so the data cannot continue exactly; each process i restores the random generators of saved "
        "process i mod 2 (masking and shuffling included) and restarts its own share of the rows at the beginning "
        "of the epoch that process was in (rows already trained on in that epoch are seen again)"
    ], done.stdout[-2000:]
    assert sorted(_losses(one_process)) == list(range(1, 13))


# ---------------------------------------------------------------------------------------------------------
# tensor parallelism (2-D mesh "dp" x "tp") and models built on the meta device
# ---------------------------------------------------------------------------------------------------------
def _assert_same_init_distribution(built: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    """Per parameter: constants (zeros, ones) equal; random ones with the same mean (within 5 standard
    errors) and standard deviation (within 10 %); padding rows of embedding tables zero."""
    assert set(built) == set(reference)
    for name, ref in reference.items():
        value = built[name]
        assert value.shape == ref.shape, name
        if ref.std() == 0:
            torch.testing.assert_close(value, ref, rtol=0, atol=0, msg=name)
            continue
        n = ref.numel()
        assert abs(float(value.mean())) < 5 * float(ref.std()) / n**0.5 + 1e-6, name
        assert float(value.std()) == pytest.approx(float(ref.std()), rel=0.1), name
        assert not torch.equal(value, ref), f"{name}: the same random values (expected another draw)"
    for name in ("genolm.embeddings.word_embeddings.weight", "genolm.embeddings.position_embeddings.weight"):
        if name in built:
            assert torch.count_nonzero(built[name][1]) == 0, f"{name}: padding row not zero"


def test_tensor_parallel_shapes_are_checked():
    from genolm import parallel
    from genolm.parallel.tensor_parallel import check_mesh, check_model

    check_mesh(2, "fsdp", 4)
    check_model(GenoLMConfig.from_preset("tiny"), 2)  # 4 heads, FFN 128
    with pytest.raises(ConfigError, match=r"^tensor_parallel=3 does not divide the 4 device\(s\) of parallel=xla_fsdp$"):
        check_mesh(3, "xla_fsdp", 4)
    with pytest.raises(ConfigError, match=r"^tensor_parallel=2 needs parallel=fsdp or xla_fsdp, not parallel=ddp$"):
        parallel.setup("ddp", tensor_parallel=2)
    with pytest.raises(ConfigError, match=r"^tensor_parallel=8 does not divide the model's num_attention_heads=4$"):
        check_model(GenoLMConfig.from_preset("tiny"), 8)
    with pytest.raises(ConfigError, match=r"^tensor_parallel=4 does not divide the model's num_attention_heads=6$"):
        check_model(GenoLMConfig.from_preset("tiny", num_attention_heads=6, hidden_size=48), 4)
    with pytest.raises(ConfigError, match=r"^tensor_parallel=3 does not divide the model's intermediate_size=128$"):
        check_model(GenoLMConfig.from_preset("tiny", num_attention_heads=6, hidden_size=48, intermediate_size=128), 3)
    with pytest.raises(ConfigError, match=r"tensor_parallel=2 does not divide the 1 device\(s\) of parallel=fsdp"):
        parallel.setup("fsdp", tensor_parallel=2)  # one process


def test_tensor_parallel_config_key():
    from genolm.training.config import parse_config

    assert parse_config([]).tensor_parallel == 1
    assert parse_config(["--tensor_parallel", "2", "--parallel", "fsdp"]).tensor_parallel == 2
    with pytest.raises(ConfigError, match="tensor_parallel must be >= 1, got 0"):
        parse_config(["--tensor_parallel", "0"])


def test_xla_partition_specs_are_megatron_style():
    from genolm.parallel.tensor_parallel import xla_partition_spec

    model = GenoLMForMaskedLM(GenoLMConfig.from_preset("tiny"))
    specs = {n: xla_partition_spec(n, p.dim()) for n, p in model.named_parameters()}
    layer = "genolm.encoder.layers.1."
    for column in ("attention.query", "attention.key", "attention.value", "ffn.up"):
        assert specs[layer + column + ".weight"] == ("model", "fsdp")  # (out, in): output features over "model"
        assert specs[layer + column + ".bias"] == ("model",)
    for row in ("attention.output", "ffn.down"):
        assert specs[layer + row + ".weight"] == ("fsdp", "model")  # input features over "model"
        assert specs[layer + row + ".bias"] == ("fsdp",)
    assert specs["genolm.embeddings.word_embeddings.weight"] == ("fsdp", "model")
    assert specs["lm_head.decoder.weight"] == ("model", "fsdp") and specs["lm_head.bias"] == ("model",)
    assert specs[layer + "attention_norm.weight"] is None and specs["lm_head.dense.weight"] is None


def test_meta_built_model_initialises_like_an_eager_one():
    """A model built on the meta device, materialised with to_empty and initialised by init_sharded_weights
    (no process group: plain tensors) has the eager model's per-parameter distributions, rotary table included."""
    from genolm.parallel.meta_init import init_sharded_weights, on_meta

    config = GenoLMConfig.from_preset("tiny", ffn_type="swiglu", ffn_bias=False, position_embedding_type="rotary")
    torch.manual_seed(0)
    eager = GenoLMForMaskedLM(config)
    with torch.device("meta"):
        model = GenoLMForMaskedLM(config)
    assert on_meta(model) and not on_meta(eager)
    model.to_empty(device="cpu")
    init_sharded_weights(model, seed=1)
    _assert_same_init_distribution(model.state_dict(), eager.state_dict())
    torch.testing.assert_close(model.genolm.rotary.inv_freq, eager.genolm.rotary.inv_freq, rtol=0, atol=0)
    with torch.device("meta"):
        second = GenoLMForMaskedLM(config)
    second.to_empty(device="cpu")
    init_sharded_weights(second, seed=1)
    for (name, a), b in zip(model.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), f"{name}: not reproducible from the seed"


@pytest.mark.slow
@pytest.mark.parametrize("ffn", ["gelu", "swiglu"])
def test_tensor_parallel_fsdp_trains_like_one_process(tmp_path, ffn):
    """2 processes as a (dp=1, tp=2) mesh: each layer's projections split Megatron-style, both processes on
    the same 8 rows; losses and gradient norms equal one process's within float tolerance, sharding shows the
    2-D placements, and the gathered export reloads with the logits the split model computed."""
    from transformers import AutoModelForMaskedLM

    single, split = tmp_path / "none", tmp_path / "tp"
    _run([sys.executable, str(WORKER), str(single), "--parallel", "none", "--ffn", ffn])
    _run(TORCHRUN + [str(WORKER), str(split), "--parallel", "fsdp", "--tensor_parallel", "2", "--ffn", ffn])
    one, two = (json.loads((d / "report.json").read_text()) for d in (single, split))
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)  # measured: <= 6e-7 relative
    assert two["norms"] == pytest.approx(one["norms"], rel=1e-4)  # measured: <= 6e-6 relative
    sharding = two["sharding"]
    layer = "genolm.encoder.layers.0."
    assert sharding[layer + "attention.query.weight"].endswith("Shard(dim=0)) over mesh (dp=1, tp=2)")
    assert sharding[layer + "attention.output.weight"] == "(Shard(dim=0), Shard(dim=1)) over mesh (dp=1, tp=2)"
    assert sharding[layer + "ffn.down.weight"] == "(Shard(dim=0), Shard(dim=1)) over mesh (dp=1, tp=2)"
    assert sharding[layer + "attention_norm.weight"] == "(Shard(dim=0),) over mesh (dp=1)"

    saved = torch.load(split / "tensors.pt", weights_only=True)
    reference = torch.load(single / "tensors.pt", weights_only=True)
    torch.testing.assert_close(saved["logits"], reference["logits"], rtol=1e-3, atol=1e-3)
    reloaded = AutoModelForMaskedLM.from_pretrained(split / "export").eval()
    with torch.no_grad():
        logits = reloaded(input_ids=saved["batch"]["input_ids"], attention_mask=saved["batch"]["attention_mask"]).logits
    torch.testing.assert_close(logits, saved["logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_meta_built_model_sharded_with_tensor_parallelism(tmp_path):
    """A tiny NT-v2-shaped model built on the meta device, split over tp=2 and sharded by FSDP2 before any
    weight exists, then initialised in its shards: the gathered initial weights have the distributions of an
    eagerly built model (the random values differ), the two tensor-parallel halves are different draws, the
    loss falls, and the export reloads with the logits the split model computed."""
    from transformers import AutoModelForMaskedLM

    out = tmp_path / "meta"
    out.mkdir()
    _run(TORCHRUN + [str(WORKER), str(out), "--parallel", "fsdp", "--tensor_parallel", "2", "--ffn", "swiglu", "--meta"])
    report = json.loads((out / "report.json").read_text())
    assert report["losses"][-1] < report["losses"][0]
    initial = torch.load(out / "initial.pt", weights_only=True)
    config = GenoLMConfig.from_preset("tiny", ffn_type="swiglu", ffn_bias=False, position_embedding_type="rotary")
    torch.manual_seed(0)
    _assert_same_init_distribution(initial, GenoLMForMaskedLM(config).state_dict())
    query = initial["genolm.encoder.layers.0.attention.query.weight"]
    assert not torch.equal(query[:32], query[32:])  # each tensor-parallel shard its own draw

    saved = torch.load(out / "tensors.pt", weights_only=True)
    reloaded = AutoModelForMaskedLM.from_pretrained(out / "export").eval()
    with torch.no_grad():
        logits = reloaded(input_ids=saved["batch"]["input_ids"], attention_mask=saved["batch"]["attention_mask"]).logits
    torch.testing.assert_close(logits, saved["logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_pretrain_recipe_with_tensor_parallelism_checkpoints_and_resumes(tmp_path):
    """recipes/pretrain.py --parallel fsdp --tensor_parallel 2 on 2 processes: the model is built on the meta
    device and split over tp, both processes read the same batches (a global batch of one process's rows),
    sharding.json shows the 2-D placements, and a resume loads the full optimizer state into the 2-D shards."""
    from transformers import AutoModelForMaskedLM

    import genolm  # noqa: F401

    out = tmp_path / "run"
    common = ["recipes/pretrain.py", "--config", str(DEBUG), "--parallel", "fsdp", "--tensor_parallel", "2",
              "--checkpoint_every", "2", "--output_dir", str(out), "--report_to", "none"]  # fmt: skip
    done = _run(TORCHRUN + common + ["--max_steps", "2"])
    assert "backend fsdp on 2 x cpu (2 process(es))" in done.stdout
    assert "batch: 8 x 64 tokens" in done.stdout  # debug.yaml's batch_size 4 per device x 2 devices, one dp rank
    sharding = json.loads((out / "sharding.json").read_text())
    assert sharding["genolm.encoder.layers.0.ffn.down.weight"] == "(Shard(dim=0), Shard(dim=1)) over mesh (dp=1, tp=2)"
    _run(TORCHRUN + common + ["--max_steps", "3", "--resume", "true"])
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3]
    assert all(r["loss"] == r["loss"] and r["loss"] < 9 for r in losses)
    checkpoint = out / "checkpoints" / "step-00000003"  # the last: sharded, with the consolidated weights
    model = AutoModelForMaskedLM.from_pretrained(checkpoint)
    assert len(list((checkpoint / "dcp").glob("*.distcp"))) == 2
    from torch.distributed.checkpoint import FileSystemReader

    saved = FileSystemReader(str(checkpoint / "dcp")).read_metadata().state_dict_metadata
    for name, param in model.named_parameters():
        assert tuple(saved[f"optimizer.state.{name}.exp_avg"].size) == tuple(param.shape), name
