"""Inference split over processes (``torchrun``, gloo) and resumed after a kill: parts, journal, merge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from genolm.errors import OutputPathError, UserError
from genolm.inference.distributed import (
    Workers,
    chunk_bounds,
    concatenate,
    file_fingerprint,
    parts_folder,
    run_in_chunks,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def torchrun(n: int, args: list[str], tmp_path: Path, env: dict | None = None, check: bool = True):
    """Run ``python -m torch.distributed.run --nproc_per_node n ARGS`` (one thread per process)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", "0",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", *args,
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1",
                   "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"torchrun failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}")
    return result


# ----------------------------------------------------------------------------------------------------------
# run_in_chunks in one process
# ----------------------------------------------------------------------------------------------------------
def squares(out: Path, calls: list[int], fail_at: int | None = None, **kwargs) -> list[dict]:
    def write_chunk(chunk: int, path: Path) -> dict:
        calls.append(chunk)
        if chunk == fail_at:
            path.write_text("half")
            raise RuntimeError(f"chunk {chunk} failed")
        path.write_text("".join(f"{i}\t{i * i}\n" for i in range(*bounds[chunk])))
        return {"rows": bounds[chunk][1] - bounds[chunk][0]}

    bounds = chunk_bounds(23, 5)
    return run_in_chunks(out, len(bounds), {"n": 23}, write_chunk, concatenate, **kwargs)


EXPECTED = "".join(f"{i}\t{i * i}\n" for i in range(23))


def test_chunks_merge_in_order_and_resume_skips_done_chunks(tmp_path):
    out = tmp_path / "squares.tsv"
    calls: list[int] = []
    with pytest.raises(RuntimeError, match="chunk 3 failed"):
        squares(out, calls, fail_at=3)
    assert calls == [0, 1, 2, 3] and not out.exists()
    folder = parts_folder(out)
    assert sorted(p.name for p in folder.glob("part-*.json")) == [f"part-{i:08d}.json" for i in range(3)]
    assert not [p for p in folder.iterdir() if p.name.startswith(".genolm-tmp")]  # the failed part is gone

    # Without --resume the parts of the unfinished run are refused; with it only the missing chunks run.
    with pytest.raises(OutputPathError, match="unfinished run.*--resume"):
        squares(out, [])
    # A part that no longer matches its marker is computed again.
    (folder / f"part-00000001-{out.name}").write_text("5\t25\n")
    calls = []
    stats = squares(out, calls, resume=True)
    assert calls == [1, 3, 4]
    assert out.read_text() == EXPECTED
    assert [s["rows"] for s in stats] == [5, 5, 5, 5, 3]
    assert not folder.exists()


def test_resume_refuses_another_fingerprint_and_overwrite_starts_over(tmp_path):
    out = tmp_path / "squares.tsv"
    with pytest.raises(RuntimeError):
        squares(out, [], fail_at=2)

    def write_chunk(chunk, path):
        path.write_text(str(chunk))

    with pytest.raises(UserError, match=r"journal.json records a run with other inputs or options \(n, n_chunks"):
        run_in_chunks(out, 3, {"n": 15}, write_chunk, concatenate, resume=True)
    with pytest.raises(ValueError, match="pass one"):
        squares(out, [], resume=True, overwrite=True)
    calls: list[int] = []
    squares(out, calls, overwrite=True)
    assert calls == [0, 1, 2, 3, 4] and out.read_text() == EXPECTED


def test_file_fingerprint_changes_with_content(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x")
    before = file_fingerprint(path)
    path.write_text("xy")
    assert file_fingerprint(path) != before and file_fingerprint(path)["size"] == 2
    assert set(file_fingerprint(tmp_path)) == {"a.txt"}


# ----------------------------------------------------------------------------------------------------------
# run_in_chunks over processes
# ----------------------------------------------------------------------------------------------------------
WORKER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from genolm.inference.distributed import chunk_bounds, concatenate, run_in_chunks, start_workers

    out, fail_at = Path(sys.argv[1]), int(sys.argv[2])
    workers = start_workers("cpu")
    bounds = chunk_bounds(23, 5)

    def write_chunk(chunk, path):
        if chunk == fail_at:
            raise RuntimeError(f"rank {workers.rank} chunk {chunk} failed")
        path.write_text("".join(f"{i}\\t{i * i}\\n" for i in range(*bounds[chunk])))
        return {"rank": workers.rank}

    stats = run_in_chunks(out, len(bounds), {"n": 23}, write_chunk, concatenate, workers=workers,
                          resume=bool(int(os.environ.get("RESUME", "0"))))
    print("ranks", workers.rank, [s["rank"] for s in stats])
    """
)


def test_two_processes_deal_chunks_and_a_failure_stops_both(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "squares.tsv"
    # Two processes started by hand (as on two hosts): no launcher stops rank 0 when rank 1 fails.
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), "WORLD_SIZE": "2",
           "MASTER_ADDR": "localhost", "MASTER_PORT": str(port), "GENOLM_WORKERS_TIMEOUT": "120"}
    ranks = [subprocess.Popen([sys.executable, str(script), str(out), "3"], cwd=tmp_path, text=True,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stderr=subprocess.PIPE)
             for r in (0, 1)]
    errors = [rank.communicate(timeout=300)[1] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [1, 1]
    assert "WorkersStopped: stopped: 1 other process(es) failed" in errors[0]  # rank 0 stopped, no hang
    assert "RuntimeError: rank 1 chunk 3 failed" in errors[1]
    assert not out.exists()
    result = torchrun(2, [str(script), str(out), "-1"], tmp_path, env={"RESUME": "1"})
    assert out.read_text() == EXPECTED
    # Chunks 0-3 were done (0, 2 by rank 0; 1 by rank 1) except 3, which rank 0 now takes with chunk 4 going to 1.
    assert "ranks 0 [0, 1, 0, 0, 1]" in result.stdout
    assert not parts_folder(out).exists()


def test_workers_default_is_one_process():
    workers = Workers()
    assert workers.is_main and workers.world == 1 and workers.count_failures(True) == 1
    workers.barrier()
    assert json.loads(json.dumps(chunk_bounds(10, 4))) == [[0, 4], [4, 8], [8, 10]]


# ----------------------------------------------------------------------------------------------------------
# genolm vep over processes
# ----------------------------------------------------------------------------------------------------------
WINDOW = 16
CHR5 = "athaliana_chr5_tail.fa.gz"


def snv_vcf(path: Path, fasta: Path, n: int, seed: int = 0) -> Path:
    """``n`` SNVs at sorted random A/C/G/T positions of the real Chr5 excerpt, REF from the FASTA."""
    import random

    from genolm.inference import Genome

    genome = Genome(fasta)
    (name, length), = genome.lengths.items()
    rng = random.Random(seed)
    seq = genome.fetch(name, 0, length).upper()
    positions = sorted(rng.sample([p for p in range(0, length, 7) if seq[p] in "ACGT"], n))
    lines = ["##fileformat=VCFv4.2", f"##contig=<ID={name},length={length}>",
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    for i, p in enumerate(positions):
        alt = rng.choice([b for b in "ACGT" if b != seq[p]])
        lines.append(f"{name}\t{p + 1}\tv{i}\t{seq[p]}\t{alt}\t.\tPASS\t.")
    path.write_text("\n".join(lines) + "\n")
    return path


def vep_argv(model: Path, fasta: Path, vcf: Path, out: Path, *extra: str) -> list[str]:
    return ["vep", "--model", str(model), "--fasta", str(fasta), "--vcf", str(vcf), "--out", str(out),
            "--window-tokens", str(WINDOW), "--device", "cpu", "--quiet", *extra]


VEP_WORKER = textwrap.dedent(
    """
    import json, sys
    from genolm.cli import main

    for argv in json.loads(sys.argv[1]):
        assert main(argv) == 0, argv
    """
)


def read_parquet(path: Path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def test_vep_two_processes_write_the_outputs_of_one(tiny_mlm_dir, shared_data, tmp_path):
    """VCF, bgzipped VCF (+ tabix index), TSV and Parquet from 2 processes under torchrun equal one process's
    (byte for byte; Parquet as tables), chunks of 7 records dealt between them."""
    import gzip

    import pysam

    from genolm.cli import main

    fasta, vcf = shared_data / CHR5, shared_data / "athaliana_chr5_tail.vcf"
    names = ["scored.vcf", "scored.vcf.gz", "scored.tsv", "scored.parquet"]
    (tmp_path / "two").mkdir()
    jobs = [vep_argv(tiny_mlm_dir, fasta, vcf, tmp_path / "two" / name, "--chunk-records", "7") for name in names]
    script = tmp_path / "vep_worker.py"
    script.write_text(VEP_WORKER)
    torchrun(2, [str(script), json.dumps(jobs)], tmp_path)
    for name in names:
        assert main(vep_argv(tiny_mlm_dir, fasta, vcf, tmp_path / name, "--chunk-records", "7")) == 0
    for name in names[:3]:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / name).read_bytes(), name
    assert read_parquet(tmp_path / "two" / "scored.parquet").equals(read_parquet(tmp_path / "scored.parquet"))
    assert not list((tmp_path / "two").glob("*.genolm-parts"))

    # The merged bgzip file is one header, the records' blocks and one EOF block: tabix and pysam read it.
    text = gzip.open(tmp_path / "two" / "scored.vcf.gz", "rt").read()
    assert text == (tmp_path / "scored.vcf").read_text() and text.count("#CHROM") == 1
    with pysam.VariantFile(str(tmp_path / "two" / "scored.vcf.gz")) as scored:
        (contig,) = scored.header.contigs
        region = [r.pos for r in scored.fetch(contig, 100_000, 400_000)]
    all_pos = [int(line.split("\t")[1]) for line in text.splitlines() if not line.startswith("#")]
    assert region == [p for p in all_pos if 100_000 < p <= 400_000] and region
    assert pysam.TabixFile(str(tmp_path / "two" / "scored.vcf.gz")).contigs == [contig]

    # TSV and Parquet hold the same rows, typed in Parquet.
    tsv = (tmp_path / "scored.tsv").read_text().splitlines()
    table = read_parquet(tmp_path / "scored.parquet").to_pylist()
    assert len(table) == len(tsv) - 1 == 45
    for row, line in zip(table, tsv[1:]):
        chrom, pos, vid, ref, alt, llr, emb, pct, skip = line.split("\t")
        assert (row["chrom"], row["pos"], row["id"], row["ref"], row["alt"]) == (chrom, int(pos), vid, ref, alt)
        assert row["llr"] == (float(llr) if llr else None) and row["skip"] == (skip or None)
        assert row["llr_pct"] == (float(pct) if pct else None)


def descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (from /proc), children first."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        children = parents.get(queue.pop(), [])
        found += children
        queue += children
    return found


def test_vep_killed_and_resumed_equals_an_uninterrupted_run(tiny_mlm_dir, shared_data, tmp_path, capsys):
    """SIGKILL a 2-process run once some chunks are done; a resume with other options is refused; resuming
    with 1 process gives the bytes of an uninterrupted run."""
    import signal
    import time

    from genolm.cli import main
    from genolm.errors import run_reporting_user_errors

    fasta = shared_data / CHR5
    vcf = snv_vcf(tmp_path / "snvs.vcf", fasta, 400)
    out = tmp_path / "killed.vcf.gz"
    script = tmp_path / "vep_worker.py"
    script.write_text(VEP_WORKER)
    job = vep_argv(tiny_mlm_dir, fasta, vcf, out, "--chunk-records", "10")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--rdzv_backend", "c10d",
               "--rdzv_endpoint", "localhost:0", str(script), json.dumps([job])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    run = subprocess.Popen(command, cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = parts_folder(out)
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.json"))) < 6 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in [*descendants(run.pid), run.pid]:  # torchrun's workers run in sessions of their own
        os.kill(pid, signal.SIGKILL)
    run.wait()
    with run.stderr:
        stderr = run.stderr.read().decode()
    done = len(list(parts.glob("part-*.json")))
    assert 6 <= done < 40, f"{done} chunks done when killed; stderr: {stderr[-2000:]}"
    assert not out.exists()

    resume = vep_argv(tiny_mlm_dir, fasta, vcf, out, "--chunk-records", "10", "--resume")
    other = [*resume[:-1], "--rc", "--resume"]
    assert run_reporting_user_errors("genolm", lambda: main(other)) == 2
    assert "records a run with other inputs or options (options differ)" in capsys.readouterr().err
    assert main(resume) == 0 and not parts.exists()
    whole = tmp_path / "whole.vcf.gz"
    assert main(vep_argv(tiny_mlm_dir, fasta, vcf, whole, "--chunk-records", "10")) == 0
    assert out.read_bytes() == whole.read_bytes()


# ----------------------------------------------------------------------------------------------------------
# ism, annotate and embed over processes
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow  # about a minute on 2 busy cores
def test_ism_annotate_embed_two_processes_write_the_outputs_of_one(tiny_mlm_dir, shared_data, tmp_path):
    """ISM of a region in 5 blocks, annotation of a 3-record genome (GFF3 + bigWig tracks, BED) and
    embeddings of 7 records (Parquet, npy, npz): 2 processes under torchrun give one process's files."""
    import numpy as np
    import torch

    from genolm import GenoLMConfig, GenoLMForTokenClassification, GenoLMTokenizer
    from genolm.cli import main
    from genolm.inference import Genome

    torch.manual_seed(0)
    config = GenoLMConfig.from_preset("tiny", per_nucleotide=True, num_labels=3,
                                      id2label={0: "gene", 1: "exon", 2: "other"},
                                      label2id={"gene": 0, "exon": 1, "other": 2})
    annotator = GenoLMForTokenClassification(config).eval()
    with torch.no_grad():
        annotator.classifier.weight.mul_(40)  # every label called somewhere
    annotator_dir = tmp_path / "annotator"
    annotator.save_pretrained(annotator_dir)
    GenoLMTokenizer().save_pretrained(annotator_dir)

    cp = Genome(shared_data / "athaliana_chloroplast.fa").fetch("NC_000932.1", 2000, 5000)
    genome = tmp_path / "mini.fa"
    genome.write_text("".join(f">{name}\n{seq}\n" for name, seq in
                              {"a": cp[:900], "b": cp[900:1500] + "N" * 13 + cp[1500:2200], "c": cp[2200:]}.items()))
    records = tmp_path / "records.fa"
    records.write_text("".join(f">r{i}\n{cp[i * 150 : i * 150 + 60 + 37 * i]}\n" for i in range(7)))

    def jobs(folder: Path) -> list[list[str]]:
        folder.mkdir()
        ism = ["ism", "--model", str(tiny_mlm_dir), "--fasta", str(shared_data / "athaliana_chloroplast.fa"),
               "--region", "NC_000932.1:1001-1100", "--window-tokens", str(WINDOW), "--chunk-bases", "21",
               "--device", "cpu", "--quiet", "--out", str(folder / "ism.tsv")]
        annotate = ["annotate", "--model", str(annotator_dir), "--fasta", str(genome), "--window-tokens", "12",
                    "--stride-tokens", "6", "--device", "cpu", "--quiet"]
        embed = ["embed", "--model", str(tiny_mlm_dir), "--fasta", str(records), "--max-tokens", "10",
                 "--chunk-records", "3", "--device", "cpu", "--quiet"]
        return [ism, [*annotate, "--out", str(folder / "ann.gff3"), "--bigwig-dir", str(folder / "tracks")],
                [*annotate, "--out", str(folder / "ann.bed")],
                *[[*embed, "--out", str(folder / f"emb.{suffix}")] for suffix in ("parquet", "npy", "npz")],
                [*embed, "--pool", "none", "--out", str(folder / "tokens.npz")]]

    script = tmp_path / "worker.py"
    script.write_text(VEP_WORKER)
    torchrun(2, [str(script), json.dumps(jobs(tmp_path / "two"))], tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker (OMP_NUM_THREADS=1): the same CPU kernels, the same bits
    try:
        for argv in jobs(tmp_path / "one"):
            assert main(argv) == 0, argv
    finally:
        torch.set_num_threads(threads)
    one, two = tmp_path / "one", tmp_path / "two"
    files = sorted(str(p.relative_to(one)) for p in one.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(two)) for p in two.rglob("*") if p.is_file())
    assert {"ism.tsv", "ann.gff3", "ann.bed", "emb.parquet", "emb.npy", "emb.ids.txt", "emb.npz"} <= set(files)
    for name in files:
        if name.endswith(".parquet"):
            assert read_parquet(one / name).equals(read_parquet(two / name))
        else:
            assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert len((one / "ism.tsv").read_text().splitlines()) == 1 + 100 * 3
    gff3 = [line.split("\t") for line in (one / "ann.gff3").read_text().splitlines() if line[0] != "#"]
    assert [f[0] for f in gff3] == sorted((f[0] for f in gff3), key="abc".index) and len({f[0] for f in gff3}) == 3
    assert [f[8].split(";")[0] for f in gff3] == [f"ID=genolm_{i}" for i in range(1, len(gff3) + 1)]
    embeddings = np.load(one / "emb.npz")
    assert embeddings.files == [f"r{i}" for i in range(7)]
    np.testing.assert_array_equal(np.load(one / "emb.npy"), np.stack([embeddings[f"r{i}"] for i in range(7)]))
