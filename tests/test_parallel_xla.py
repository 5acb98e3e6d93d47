"""torch-xla SPMD FSDPv2 on 4 virtual CPU devices (run in the XLA environment: tests/run_xla_stage.sh).

Checks: parameters sharded over the 4 devices, the loss falls, no graph compilation after step 2, the
consolidated export reloads on the CPU with the same logits, fine-tuning under the same runtime saves a model
that reproduces its predictions on the CPU, CPU runs are not taken over by torch-xla, a run killed with
SIGKILL and resumed logs exactly the losses of an uninterrupted one, a sharded (DCP) checkpoint of 4
devices reloads exactly on 2 devices and on the CPU, and exports, a (2, 2) mesh with tensor parallelism
trains like (4, 1), and a meta-device model is materialised in its shards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xla

REPO = Path(__file__).resolve().parents[1]
DEBUG = REPO / "recipes" / "configs" / "debug.yaml"
TPU_CONFIG = REPO / "recipes" / "accelerate" / "tpu_v4_fsdp.yaml"
N_DEVICES = 4

if importlib.util.find_spec("torch_xla") is None:
    pytest.skip("torch_xla is not installed (the XLA stage runs tests/run_xla_stage.sh)", allow_module_level=True)


def _env(xla: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PJRT_DEVICE", "CPU_NUM_DEVICES", "USE_TORCH_XLA")}
    if xla:
        env.update(PJRT_DEVICE="CPU", CPU_NUM_DEVICES=str(N_DEVICES))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(command: list[str], xla: bool, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=REPO, env=_env(xla), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def _training_records(out: Path) -> list[dict]:
    lines = (out / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


def _check_xla_run(out: Path, stdout: str, steps: int) -> None:
    records = _training_records(out)
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    compiles = [r["xla_compiles"] for r in records]
    # AdamW creates its state at the first step, so step 2 compiles once more; after that, never.
    assert len(set(compiles[1:])) == 1, f"recompilation after step 2: {compiles}"
    sharding = json.loads((out / "sharding.json").read_text())
    weights = {name: spec for name, spec in sharding.items() if name.endswith(".weight") and "norm" not in name}
    assert weights and all(f"devices=[{N_DEVICES},1]" in spec or f"devices=[1,{N_DEVICES}]" in spec for spec in weights.values()), weights
    assert "xla_fsdp" in stdout and f"{N_DEVICES} x cpu" in stdout
    match = [line for line in stdout.splitlines() if line.startswith("validation perplexity:")]
    assert match, stdout[-2000:]


def test_recipe_xla_fsdp_on_four_cpu_devices(tmp_path):
    out = tmp_path / "run"
    steps = 8
    result = _run(
        [sys.executable, "recipes/pretrain.py", "--config", str(DEBUG), "--parallel", "xla_fsdp",
         "--max_steps", str(steps), "--checkpoint_every", "4", "--lr", "3e-3", "--output_dir", str(out)],
        xla=True,
    )
    _check_xla_run(out, result.stdout, steps)
    records = _training_records(out)
    assert min(r["loss"] for r in records[-3:]) < records[0]["loss"], [r["loss"] for r in records]
    before_after = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "val_loss" in line]
    assert before_after[-1]["val_loss"] < 8.3375  # below the untrained model's validation loss


def test_accelerate_launch_with_tpu_config(tmp_path):
    out = tmp_path / "run"
    accelerate = Path(sys.executable).with_name("accelerate")
    result = _run(
        [str(accelerate), "launch", "--config_file", str(TPU_CONFIG), "recipes/pretrain.py", "--config", str(DEBUG),
         "--parallel", "xla_fsdp", "--max_steps", "4", "--checkpoint_every", "0", "--fill_mask_example", "false", "--output_dir", str(out)],
        xla=True,
    )
    _check_xla_run(out, result.stdout, 4)


def test_export_reloads_on_cpu_with_same_logits(tmp_path):
    _run([sys.executable, "tests/xla_export_worker.py", str(tmp_path)], xla=True)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["num_devices"] == N_DEVICES
    rows, cols = report["weight_shape"]
    assert report["shard_shapes"] == [[rows // N_DEVICES, cols]] * N_DEVICES  # each device holds a quarter
    assert len(set(report["compiles"][1:])) == 1, report["compiles"]
    assert report["losses"][-1] < report["losses"][0], report["losses"]

    # Reload in a CPU process (by default this interpreter with torch-xla disabled; GENOLM_CPU_PYTHON may
    # name the main environment's interpreter).
    python = os.environ.get("GENOLM_CPU_PYTHON", sys.executable)
    check = (
        "import sys, torch, genolm\n"
        "from transformers import AutoModelForMaskedLM\n"
        "ref = torch.load(sys.argv[2])\n"
        "model = AutoModelForMaskedLM.from_pretrained(sys.argv[1]).eval()\n"
        "with torch.no_grad():\n"
        "    logits = model(**ref['batch']).logits\n"
        "diff = (logits - ref['logits']).abs().max().item()\n"
        "print('max_abs_diff', diff)\n"
        "assert diff < 1e-4, diff\n"
    )
    env = {**_env(xla=False), "USE_TORCH_XLA": "0"}
    result = subprocess.run(
        [python, "-c", check, str(tmp_path / "export"), str(tmp_path / "device_logits.pt")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    print(result.stdout)


def test_cpu_run_not_taken_over_by_torch_xla(tmp_path):
    out = tmp_path / "run"
    result = _run(
        [sys.executable, "recipes/pretrain.py", "--config", str(DEBUG), "--max_steps", "2", "--checkpoint_every", "0",
         "--fill_mask_example", "false", "--output_dir", str(out)],
        xla=False,
    )
    assert "backend none on 1 x cpu" in result.stdout
    assert all("xla_compiles" not in r for r in _training_records(out))


def test_finetune_xla_fsdp_reloads_on_cpu_with_same_predictions(tmp_path):
    """recipes/finetune.py under SPMD FSDPv2 on 4 devices: batches padded to max_length (no recompilation
    between training steps), the loss falls on a fixed training set, and the saved best model reloads in a
    CPU process and reproduces the validation predictions the devices computed."""
    data = REPO.parent / "shared" / "data" / "pgb" / "poly_a.arabidopsis_thaliana" / "test.csv"
    if not data.exists():
        pytest.skip(f"shared test data not found at {data}")
    out = tmp_path / "run"
    result = _run(
        [sys.executable, "recipes/finetune.py", "--parallel", "xla_fsdp", "--train", str(data), "--validation",
         str(data), "--max_train_samples", "8", "--max_eval_samples", "21", "--batch_size", "2", "--max_steps", "8",
         "--eval_every", "4", "--log_every", "1", "--max_length", "12", "--lr", "3e-3", "--mixed_precision", "no",
         "--output_dir", str(out)],
        xla=True,
    )  # fmt: skip
    assert "backend xla_fsdp" in result.stdout and f"x 1 x {N_DEVICES} sequences" in result.stdout
    records = _training_records(out)
    assert [r["step"] for r in records] == list(range(1, 9))
    losses = [r["loss"] for r in records]
    assert min(losses[-3:]) < losses[0], losses  # 8 rows = one host batch: the same rows at every step
    compiles = [r["xla_compiles"] for r in records]
    # a validation pass runs after steps 4 and 8; the training step itself compiles only at steps 1-2
    assert compiles[1] == compiles[2] == compiles[3] and compiles[4:] == [compiles[4]] * 4, compiles

    check = (
        "import sys, numpy as np, pandas as pd, torch, genolm\n"
        "from pathlib import Path\n"
        "from transformers import AutoModelForSequenceClassification\n"
        "from genolm import GenoLMTokenizer\n"
        "from genolm.finetune import Collator, EncodedDataset, LabelSpec, encode_split, load_records, predict, score\n"
        "out, data = Path(sys.argv[1]), sys.argv[2]\n"
        "model = AutoModelForSequenceClassification.from_pretrained(out / 'model').eval()\n"
        "tokenizer = GenoLMTokenizer.from_pretrained(out / 'model')\n"
        "spec = LabelSpec.fit('classification', load_records(data).subset(range(8)))\n"
        "split = encode_split(load_records(data).subset(range(21)), spec, tokenizer, 12, 'truncate')\n"
        "loader = torch.utils.data.DataLoader(EncodedDataset(split, with_window=True), batch_size=5,\n"
        "                                     collate_fn=Collator(tokenizer.pad_token_id))\n"
        "metrics, table = score(split, spec, predict(model, loader, split, 'classification'))\n"
        "saved = pd.read_parquet(out / 'predictions_validation.parquet')\n"
        "assert len(saved) == len(table) == 21\n"
        "diff = np.abs(saved.filter(like='prob_').to_numpy() - table.filter(like='prob_').to_numpy()).max()\n"
        "print('max_abs_diff', diff)\n"
        "assert diff < 1e-4, diff\n"
    )
    python = os.environ.get("GENOLM_CPU_PYTHON", sys.executable)
    env = {**_env(xla=False), "USE_TORCH_XLA": "0"}
    done = subprocess.run(
        [python, "-c", check, str(out), str(data)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    print(done.stdout)


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _training_records(out)}


def test_sigkill_and_resume_gives_identical_losses_under_xla_fsdp(tmp_path):
    """A run on 4 devices killed with SIGKILL right after its step-4 checkpoint, then resumed, logs the losses of
    an uninterrupted run at steps 5-10, exactly: the same step graph runs on bitwise the same weights, optimizer
    moments, batches and device seed. The device loader prefetches batches on a thread, so the saved data
    position must be the one the last optimizer step consumed, not the prefetcher's; dropout is on, so the
    device's random seed must be restored too."""
    import signal
    import time

    common = [sys.executable, "recipes/pretrain.py", "--config", str(DEBUG), "--parallel", "xla_fsdp",
              "--max_steps", "10", "--checkpoint_every", "4", "--keep_checkpoints", "5", "--shuffle_buffer", "16",
              "--model_overrides.hidden_dropout_prob", "0.1", "--fill_mask_example", "false"]  # fmt: skip
    reference = tmp_path / "reference"
    _run(common + ["--output_dir", str(reference)], xla=True)
    expected = _losses(reference)
    assert sorted(expected) == list(range(1, 11))

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        common + ["--output_dir", str(killed)], cwd=REPO, env=_env(True), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    checkpoint = killed / "checkpoints" / "step-00000004"
    deadline = time.monotonic() + 600
    while not checkpoint.exists():
        assert process.poll() is None, f"the run ended before its step-4 checkpoint:\n{process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no step-4 checkpoint in 600 s"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    resumed = _run(common + ["--output_dir", str(killed), "--resume", "true"], xla=True)
    found = re.search(r"^resumed from \S+ at step (\d+)$", resumed.stdout, re.MULTILINE)
    start = int(found.group(1)) if found else None
    assert start in (4, 8), resumed.stdout[-2000:]  # 8 when this process was scheduled late on a busy host
    got = _losses(killed)
    assert sorted(got) == list(range(1, 11))
    assert [got[step] for step in range(start + 1, 11)] == [expected[step] for step in range(start + 1, 11)], (got, expected)


def test_dcp_checkpoint_reloads_on_two_devices_and_on_the_cpu_and_exports(tmp_path):
    """tests/sharded_checkpoint_worker.py under xla_fsdp: 3 steps on 4 devices and a sharded checkpoint
    (torch-xla's SPMD planner); the checkpoint loads on 2 devices and, in a CPU process, under the plain
    runtime (the other backends' names) with exactly the weights and AdamW state the 4 devices held; `genolm
    export` writes those weights and AutoModelForMaskedLM reproduces the devices' logits."""
    import torch

    worker = str(REPO / "tests" / "sharded_checkpoint_worker.py")
    python = os.environ.get("GENOLM_CPU_PYTHON", sys.executable)
    cpu_env = {**_env(xla=False), "USE_TORCH_XLA": "0", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    runs = {name: tmp_path / name for name in ("four", "two", "cpu")}
    for folder in runs.values():
        folder.mkdir()
    _run([sys.executable, worker, str(runs["four"]), "--parallel", "xla_fsdp", "--steps", "3"], xla=True)
    checkpoint = runs["four"] / "checkpoints" / "step-00000003"
    assert sorted(p.name for p in (checkpoint / "dcp").iterdir()) == [".metadata", "__0_0.distcp"]  # one host
    two = subprocess.run(
        [sys.executable, worker, str(runs["two"]), "--parallel", "xla_fsdp", "--steps", "0", "--resume", str(checkpoint)],
        cwd=REPO, env={**_env(xla=True), "CPU_NUM_DEVICES": "2"}, capture_output=True, text=True, timeout=900,
    )
    assert two.returncode == 0, two.stderr[-5000:]
    cpu = subprocess.run(
        [python, worker, str(runs["cpu"]), "--parallel", "none", "--steps", "0", "--resume", str(checkpoint)],
        cwd=REPO, env=cpu_env, capture_output=True, text=True, timeout=600,
    )
    assert cpu.returncode == 0, cpu.stderr[-5000:]

    saved = torch.load(runs["four"] / "saved.pt", weights_only=True)
    for name in ("two", "cpu"):
        loaded = torch.load(runs[name] / "loaded.pt", weights_only=True)
        assert loaded["trainer"]["backend"] == "xla_fsdp" and loaded["trainer"]["mesh_shape"] == [N_DEVICES, 1]
        assert loaded["model"].keys() == saved["model"].keys()
        for key, value in saved["model"].items():
            assert torch.equal(loaded["model"][key], value), (name, key)
        assert set(loaded["optimizer"]["state"]) == set(saved["optimizer"]["state"])
        for key, moments in saved["optimizer"]["state"].items():
            for moment, value in moments.items():
                assert torch.equal(torch.as_tensor(loaded["optimizer"]["state"][key][moment]).float().cpu(),
                                   torch.as_tensor(value).float().cpu()), (name, key, moment)  # fmt: skip
        torch.testing.assert_close(loaded["logits"], saved["logits"], rtol=1e-4, atol=1e-4)

    check = (
        "import sys, torch, genolm\n"
        "from transformers import AutoModelForMaskedLM\n"
        "from genolm.cli import main\n"
        "assert main(['export', sys.argv[1], sys.argv[2]]) == 0\n"
        "saved = torch.load(sys.argv[3], weights_only=True)\n"
        "model = AutoModelForMaskedLM.from_pretrained(sys.argv[2]).eval()\n"
        "for name, value in model.state_dict().items():\n"
        "    assert torch.equal(value, saved['model'][name]), name\n"
        "with torch.no_grad():\n"
        "    logits = model(input_ids=saved['batch']['input_ids'], attention_mask=saved['batch']['attention_mask']).logits\n"
        "diff = (logits - saved['logits']).abs().max().item()\n"
        "print('max_abs_diff', diff)\n"
        "assert diff < 1e-4, diff\n"
    )
    done = subprocess.run(
        [python, "-c", check, str(checkpoint), str(tmp_path / "export"), str(runs["four"] / "saved.pt")],
        cwd=REPO, env=cpu_env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]


def _loss_list(out: Path) -> list[float]:
    return [r["loss"] for r in _training_records(out)]


def test_tensor_parallel_2x2_mesh_trains_like_4x1(tmp_path):
    """The pretraining recipe on a (2, 2) mesh, each layer split Megatron-style over "model", gives the losses of
    the (4, 1) run from the same initial weights on the same batches (float tolerance 1e-4 relative; the
    reduction orders differ), with 2-D partition specs in sharding.json."""
    import torch

    from genolm import GenoLMConfig, GenoLMForMaskedLM

    init = tmp_path / "init"
    torch.manual_seed(0)
    GenoLMForMaskedLM(GenoLMConfig.from_preset("tiny")).save_pretrained(init)
    common = [sys.executable, "recipes/pretrain.py", "--config", str(DEBUG), "--parallel", "xla_fsdp",
              "--init_from", str(init), "--max_steps", "4", "--checkpoint_every", "0", "--eval_batches", "1",
              "--fill_mask_example", "false", "--lr", "3e-3"]  # fmt: skip
    one_d, two_d = tmp_path / "4x1", tmp_path / "2x2"
    _run(common + ["--output_dir", str(one_d)], xla=True)
    result = _run(common + ["--output_dir", str(two_d), "--tensor_parallel", "2"], xla=True)
    assert "XLA SPMD mesh (2, 2) ('fsdp', 'model')" in result.stdout
    reference, losses = _loss_list(one_d), _loss_list(two_d)
    print("max relative loss difference", max(abs(a - b) / a for a, b in zip(losses, reference)))
    assert losses == pytest.approx(reference, rel=1e-4)  # measured: 1.1e-7
    sharding = json.loads((two_d / "sharding.json").read_text())
    layer = "genolm.encoder.layers.0."
    # OpSharding text of the 2-D specs: ("model", "fsdp") tiles dim 0 over the model axis (devices 0,2 | 1,3),
    # ("fsdp", "model") dim 0 over the fsdp axis; norms (fsdp only) are replicated over "model".
    for column in ("attention.query.weight", "attention.key.weight", "attention.value.weight", "ffn.up.weight"):
        assert sharding[layer + column] == "{devices=[2,2]0,2,1,3}", column
    for row in ("attention.output.weight", "ffn.down.weight"):
        assert sharding[layer + row] == "{devices=[2,2]0,1,2,3}", row
    assert sharding["lm_head.decoder.weight"] == "{devices=[2,2]0,2,1,3}"
    assert sharding[layer + "attention_norm.weight"] == "{devices=[2,2]0,1,2,3 last_tile_dim_replicate}"


def test_meta_built_model_materialised_sharded_on_devices(tmp_path):
    """A preset built on the meta device and materialised on the 4 devices in its 2-D shards: every parameter
    sharded, the gathered weights have an eagerly built model's per-parameter distributions (normal std,
    zeros, ones, zero padding row; the random values differ), and the rotary table is right (the export
    reloads on the CPU with the logits the devices computed)."""
    script = (
        "import sys, torch, genolm\n"
        "from genolm import GenoLMConfig, GenoLMForMaskedLM, parallel\n"
        "rt = parallel.setup('xla_fsdp', mixed_precision='no', tensor_parallel=2)\n"
        "config = GenoLMConfig.from_preset('tiny', ffn_type='swiglu', ffn_bias=False, position_embedding_type='rotary')\n"
        "torch.manual_seed(0)\n"
        "with torch.device('meta'):\n"
        "    model = GenoLMForMaskedLM(config)\n"
        "model, _ = rt.prepare(model, lambda m: None)\n"
        "summary = rt.sharding_summary(model)\n"
        "assert all(spec != 'replicated' for spec in summary.values()), summary\n"
        "ids = torch.randint(5, 4100, (8, 16), generator=torch.Generator().manual_seed(0)); ids[:, 0] = 3\n"
        "batch = {'input_ids': ids, 'attention_mask': torch.ones_like(ids)}\n"
        "with torch.no_grad():\n"
        "    logits = model(**rt.to_device(batch)).logits.cpu()\n"
        "weights = rt.model_state_dict(model)\n"
        "torch.save({'weights': weights, 'batch': batch, 'logits': logits}, sys.argv[1])\n"
        "rt.unwrap(model).save_pretrained(sys.argv[2], state_dict=weights)\n"
    )
    _run([sys.executable, "-c", script, str(tmp_path / "state.pt"), str(tmp_path / "export")], xla=True)

    import torch

    from genolm import GenoLMConfig, GenoLMForMaskedLM

    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    config = GenoLMConfig.from_preset("tiny", ffn_type="swiglu", ffn_bias=False, position_embedding_type="rotary")
    torch.manual_seed(0)
    reference = GenoLMForMaskedLM(config).state_dict()
    built = saved["weights"]
    assert set(built) == set(reference)
    for name, ref in reference.items():
        value = built[name]
        if ref.std() == 0:  # zeros and ones
            assert torch.equal(value, ref), name
            continue
        assert abs(float(value.mean())) < 5 * float(ref.std()) / ref.numel() ** 0.5, name
        assert float(value.std()) == pytest.approx(float(ref.std()), rel=0.1), name
        assert not torch.equal(value, ref), name
    assert torch.count_nonzero(built["genolm.embeddings.word_embeddings.weight"][1]) == 0  # padding row

    python = os.environ.get("GENOLM_CPU_PYTHON", sys.executable)
    check = (
        "import sys, torch, genolm\n"
        "from transformers import AutoModelForMaskedLM\n"
        "ref = torch.load(sys.argv[2])\n"
        "model = AutoModelForMaskedLM.from_pretrained(sys.argv[1]).eval()\n"
        "with torch.no_grad():\n"
        "    logits = model(**ref['batch']).logits\n"
        "diff = (logits - ref['logits']).abs().max().item()\n"
        "print('max_abs_diff', diff)\n"
        "assert diff < 1e-4, diff\n"
    )
    env = {**_env(xla=False), "USE_TORCH_XLA": "0"}
    done = subprocess.run(
        [python, "-c", check, str(tmp_path / "export"), str(tmp_path / "state.pt")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
