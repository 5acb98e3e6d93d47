"""genolm.outputs: refusing unusable output paths, atomic files and folders, the run-folder lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings

import numpy as np
import pytest

from genolm.errors import OutputPathError
from genolm.outputs import LOCK_NAME, atomic_file, atomic_folder, check_outputs, run_lock


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".genolm-tmp"))


# ----------------------------------------------------------------------------------------------------------
# check_outputs
# ----------------------------------------------------------------------------------------------------------
def test_output_that_is_an_input_is_refused_whatever_its_spelling(tmp_path):
    vcf = tmp_path / "calls.vcf"
    vcf.write_text("x\n")
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.vcf"
    link.symlink_to(vcf)
    for spelling in (vcf, tmp_path / "sub" / ".." / "calls.vcf", link):
        with pytest.raises(OutputPathError, match=r"output --out \S+\.vcf is also the input --vcf \S+calls\.vcf"):
            check_outputs({"--out": spelling}, {"--vcf": vcf})
    check_outputs({"--out": tmp_path / "scored.vcf"}, {"--vcf": vcf, "--fasta": None})  # fine


def test_output_inside_or_around_an_input_folder_is_refused(tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    with pytest.raises(OutputPathError, match=r"lies inside the input folder --model .*ckpt"):
        check_outputs({"--out": checkpoint / "esm"}, {"--model": checkpoint})
    with pytest.raises(OutputPathError, match=r"output folder .*ckpt is also the input"):
        check_outputs({}, {"src": checkpoint}, folders={"out": checkpoint}, overwrite=True)
    with pytest.raises(OutputPathError, match=r"output folder out .* holds the input src .*config\.json"):
        check_outputs({}, {"src": checkpoint / "config.json"}, folders={"out": tmp_path}, overwrite=True)


def test_output_under_a_file_or_a_folder_named_like_the_file_is_refused(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(OutputPathError, match=r"cannot write output .*plain/a/out\.tsv: .*plain is a file"):
        check_outputs([tmp_path / "plain" / "a" / "out.tsv"])
    (tmp_path / "folder.tsv").mkdir()
    with pytest.raises(OutputPathError, match=r"folder\.tsv is a folder; give a file name"):
        check_outputs([tmp_path / "folder.tsv"])
    check_outputs([tmp_path / "new" / "deeper" / "out.tsv"])  # missing parents are created later


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_output_in_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputPathError, match="permission denied"):
        check_outputs([locked / "x" / "out.tsv"])


def test_non_empty_output_folder_needs_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    check_outputs([], folders={"--output_dir": out})  # empty: fine
    (out / LOCK_NAME).write_text("")
    check_outputs([], folders={"--output_dir": out})  # a lock file alone does not count
    (out / "log.jsonl").write_text("{}\n")
    with pytest.raises(OutputPathError, match=r"output folder --output_dir .*run exists and is not empty.*--overwrite"):
        check_outputs([], folders={"--output_dir": out})
    check_outputs([], folders={"--output_dir": out}, overwrite=True)
    with pytest.raises(OutputPathError, match=r"log\.jsonl is a file"):
        check_outputs([], folders=[out / "log.jsonl"])


# ----------------------------------------------------------------------------------------------------------
# atomic_file / atomic_folder
# ----------------------------------------------------------------------------------------------------------
def test_atomic_file_renames_a_complete_file_and_keeps_the_suffix(tmp_path):
    out = tmp_path / "deep" / "emb.npy"
    with atomic_file(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.endswith("emb.npy") and not out.exists()
        np.save(tmp, np.arange(5))  # numpy appends .npy unless the name already ends with it
    np.testing.assert_array_equal(np.load(out), np.arange(5))
    assert leftovers(out.parent) == []


def test_atomic_file_error_keeps_the_previous_content_and_leaves_nothing(tmp_path):
    out = tmp_path / "table.tsv"
    out.write_text("previous\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_file(out) as tmp:
            tmp.write_text("half a ta")
            raise RuntimeError("boom")
    assert out.read_text() == "previous\n" and leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(tmp_path / "new.tsv") as tmp:
            tmp.write_text("x")
            raise KeyboardInterrupt
    assert not (tmp_path / "new.tsv").exists() and leftovers(tmp_path) == []


def test_atomic_file_writes_devices_and_pipes_directly():
    with atomic_file("/dev/null") as target:
        assert str(target) == "/dev/null"
        target.write_text("discarded")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_atomic_folder_replaces_only_when_complete(tmp_path):
    out = tmp_path / "converted"
    with atomic_folder(out) as tmp:
        (tmp / "config.json").write_text('{"a": 1}')
    assert json.loads((out / "config.json").read_text()) == {"a": 1}
    with pytest.raises(RuntimeError):
        with atomic_folder(out, overwrite=True) as tmp:
            (tmp / "config.json").write_text('{"a": 2')
            raise RuntimeError("convert failed")
    assert json.loads((out / "config.json").read_text()) == {"a": 1} and leftovers(tmp_path) == []
    with pytest.raises(OutputPathError, match="not empty"):
        with atomic_folder(out) as tmp:
            (tmp / "config.json").write_text('{"a": 3}')
    assert json.loads((out / "config.json").read_text()) == {"a": 1} and leftovers(tmp_path) == []
    with atomic_folder(out, overwrite=True) as tmp:
        (tmp / "weights").write_text("w")
    assert sorted(p.name for p in out.iterdir()) == ["weights"] and sorted(os.listdir(tmp_path)) == ["converted"]


# ----------------------------------------------------------------------------------------------------------
# run_lock
# ----------------------------------------------------------------------------------------------------------
def test_second_run_into_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from genolm.outputs import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        record = json.loads((tmp_path / LOCK_NAME).read_text())
        assert record["pid"] == holder.pid and record["host"] == socket.gethostname()
        with pytest.raises(OutputPathError, match=rf"in use by another run \(host \S+, pid {holder.pid}, started"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match=f"taking over the lock of run pid {holder.pid}"):
        with run_lock(tmp_path) as lock:  # the holder died: its flock went with it
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_in_the_same_process_is_refused_and_released_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with run_lock(tmp_path):
            with pytest.raises(OutputPathError, match=f"pid {os.getpid()}"):
                with run_lock(tmp_path):
                    pass
            raise RuntimeError("training failed")
    assert not (tmp_path / LOCK_NAME).exists()
    with run_lock(tmp_path):
        pass


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = {"host": socket.gethostname(), "pid": pid, "started": "2026-01-01 00:00:00 UTC"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with run_lock(tmp_path) as lock:
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert any(f"taking over the lock of run pid {pid}" in str(w.message) for w in caught)
