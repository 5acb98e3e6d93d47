"""``genolm embed``: output keyed by record id, shapes, windowing of long records and layer choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from genolm.cli import main
from genolm.embed import embed, embed_fasta, load_encoder, write_embeddings
from genolm.modeling_genolm import pool as pool_states


@pytest.fixture(scope="module")
def records(shared_data) -> dict[str, str]:
    """Three real chloroplast pieces: short, with an N, and long (several windows at max_tokens=40)."""
    genome = "".join(
        line.strip() for line in (shared_data / "athaliana_chloroplast.fa").read_text().splitlines()[1:]
    )
    return {
        "psbA_region": genome[382:700],
        "with_N": genome[5000:5100] + "N" + genome[5100:5203],
        "long": genome[10_000:11_500],
    }


@pytest.fixture(scope="module")
def encoder(tiny_mlm_dir):
    return load_encoder(tiny_mlm_dir, device="cpu")


def _write_fasta(path, records):
    path.write_text("".join(f">{k} some description\n{v}\n" for k, v in records.items()))
    return path


def test_embed_fasta_outputs_keyed_by_record(tiny_mlm_dir, records, tmp_path):
    fasta = _write_fasta(tmp_path / "in.fa", records)
    out = tmp_path / "emb.parquet"
    result = embed_fasta(tiny_mlm_dir, fasta, out, max_tokens=40, batch_size=3, progress=False, device="cpu")
    assert list(result) == list(records)
    table = pd.read_parquet(out)
    assert table.id.tolist() == list(records)
    assert table.length.tolist() == [len(s) for s in records.values()]
    matrix = np.stack(table.embedding.to_numpy())
    assert matrix.shape == (3, 64) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix, np.stack(list(result.values())))

    write_embeddings(result, tmp_path / "emb.npy")
    assert np.load(tmp_path / "emb.npy").shape == (3, 64)
    assert (tmp_path / "emb.ids.txt").read_text().split() == list(records)


def test_unpooled_and_windowed_mean_agree(encoder, records, tmp_path):
    model, tokenizer = encoder
    tokens = embed(model, tokenizer, records, pool="none", max_tokens=40, progress=False)
    for record_id, sequence in records.items():
        assert tokens[record_id].shape == (len(tokenizer.encode_genome(sequence)), 64)
    means = embed(model, tokenizer, records, pool="mean", max_tokens=40, batch_size=2, progress=False)
    for record_id in records:  # the windowed mean is the mean over all of the record's tokens
        np.testing.assert_allclose(means[record_id], tokens[record_id].mean(0), rtol=1e-5, atol=1e-6)
    write_embeddings(tokens, tmp_path / "tokens.npz")
    assert np.load(tmp_path / "tokens.npz")["long"].shape == tokens["long"].shape
    write_embeddings(tokens, tmp_path / "tokens.parquet")
    stored = pd.read_parquet(tmp_path / "tokens.parquet").set_index("id").embedding["long"]
    np.testing.assert_array_equal(np.stack(stored), tokens["long"])
    with pytest.raises(ValueError, match="pooled embeddings only"):
        write_embeddings(tokens, tmp_path / "tokens.npy")


@pytest.mark.parametrize("method", ["mean", "cls"])
def test_single_window_matches_the_model(encoder, records, method):
    """Reference: the tokenizer's batch call, the model's forward and modeling_genolm.pool."""
    model, tokenizer = encoder
    short = {k: records[k] for k in ("psbA_region", "with_N")}
    batch = tokenizer(list(short.values()), padding=True, return_tensors="pt")
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True)
    for layer, states in (
        (-1, output.last_hidden_state),
        (0, output.hidden_states[0]),
        (1, output.hidden_states[1]),
    ):
        expected = pool_states(states, batch["attention_mask"], method).numpy()
        got = embed(model, tokenizer, short, pool=method, layer=layer, progress=False)
        np.testing.assert_allclose(np.stack(list(got.values())), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        embed(model, tokenizer, short, layer=3, progress=False)


def test_embed_cli(tiny_mlm_dir, records, tmp_path):
    fasta = _write_fasta(tmp_path / "in.fa", {k: records[k] for k in ("psbA_region", "with_N")})
    out = tmp_path / "cls.npz"
    argv = ["embed", "--model", str(tiny_mlm_dir), "--fasta", str(fasta), "--out", str(out), "--pool", "cls"]
    assert main([*argv, "--batch-size", "1", "--device", "cpu", "--quiet"]) == 0
    assert sorted(np.load(out).files) == ["psbA_region", "with_N"]
    assert (
        main(["embed", "--model", str(tiny_mlm_dir), "--fasta", str(fasta), "--out", str(tmp_path / "x.csv")])
        == 2
    )


def test_embed_from_esm_format_checkpoint(tiny_mlm_dir, encoder, records, tmp_path):
    """An ESM-format checkpoint (the format of the published NT / AgroNT weights) is converted on the fly and
    gives the same embeddings as the genolm checkpoint it was exported from."""
    from genolm.convert import genolm_to_esm

    genolm_to_esm(tiny_mlm_dir, tmp_path / "esm")
    model, tokenizer = load_encoder(tmp_path / "esm", device="cpu")
    short = {"psbA_region": records["psbA_region"]}
    got = embed(model, tokenizer, short, progress=False)["psbA_region"]
    expected = embed(*encoder, short, progress=False)["psbA_region"]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_embed_refuses_its_input_and_leaves_nothing_after_an_error(tiny_mlm_dir, records, tmp_path, monkeypatch):
    import hashlib

    import genolm.embed as embed_module

    fasta = _write_fasta(tmp_path / "in.fa", records)
    before = sorted(p.name for p in tiny_mlm_dir.iterdir())
    with pytest.raises(ValueError, match=rf"output --out {tiny_mlm_dir}/emb.npz lies inside the input folder --model"):
        embed_fasta(tiny_mlm_dir, fasta, tiny_mlm_dir / "emb.npz", progress=False, device="cpu")
    assert sorted(p.name for p in tiny_mlm_dir.iterdir()) == before
    fasta_npz = tmp_path / "records.npz"  # a FASTA with an unlucky name
    fasta_npz.write_bytes(fasta.read_bytes())
    digest = hashlib.sha256(fasta_npz.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=rf"output --out {fasta_npz} is also the input --fasta"):
        embed_fasta(tiny_mlm_dir, fasta_npz, fasta_npz, progress=False, device="cpu")
    assert hashlib.sha256(fasta_npz.read_bytes()).hexdigest() == digest

    # .npy writes the matrix and its ids file together, or neither.
    def failing_save(path, array):
        with open(path, "wb") as handle:
            handle.write(b"\x93NUMPY half")
        raise OSError("disk went away")

    monkeypatch.setattr(embed_module.np, "save", failing_save)
    with pytest.raises(OSError, match="disk went away"):
        embed_fasta(tiny_mlm_dir, fasta, tmp_path / "out" / "emb.npy", max_tokens=40, progress=False, device="cpu")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_embed_on_a_full_disk_writes_nothing_and_says_so(tiny_mlm_dir, records, tmp_path, capsys):
    import subprocess

    from genolm.errors import run_reporting_user_errors

    fasta = _write_fasta(tmp_path / "in.fa", records)
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        out = disk / "emb.npz"
        argv = ["embed", "--model", str(tiny_mlm_dir), "--fasta", str(fasta), "--out", str(out), "--pool", "none",
                "--max-tokens", "40", "--device", "cpu", "--quiet"]
        assert run_reporting_user_errors("genolm", lambda: main(argv)) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("genolm embed: error: no space left on the device")
        assert f"writing {out};" in errors[0]
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("pool", ["mean", "cls", "none"])
def test_length_bucketed_batches_give_the_unbucketed_embeddings_in_input_order(encoder, records, pool):
    """Windows of mixed length batched by length (the default) and in input order give the same embeddings,
    returned in input order."""
    model, tokenizer = encoder
    # Several windows per record at 40 tokens, records of different lengths: the two batchings differ.
    kwargs = dict(pool=pool, batch_size=3, max_tokens=40, progress=False)
    bucketed = embed(model, tokenizer, records, **kwargs)
    plain = embed(model, tokenizer, records, length_buckets=False, **kwargs)
    assert list(bucketed) == list(plain) == list(records)
    for record_id in records:
        np.testing.assert_allclose(bucketed[record_id], plain[record_id], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_embed_cli_compile_gives_the_eager_embeddings(tiny_mlm_dir, records, tmp_path):
    """``genolm embed --compile`` (each layer torch.compile-d) writes the embeddings of the eager run."""
    fasta = _write_fasta(tmp_path / "in.fa", records)
    outs = {flag: tmp_path / f"{flag.strip('-')}.npz" for flag in ("--compile", "--no-compile")}
    for flag, out in outs.items():
        argv = ["embed", "--model", str(tiny_mlm_dir), "--fasta", str(fasta), "--out", str(out), "--max-tokens", "40"]
        assert main([*argv, flag, "--device", "cpu", "--quiet"]) == 0
    compiled, eager = (np.load(out) for out in outs.values())
    assert sorted(compiled.files) == sorted(records)
    for record_id in records:
        np.testing.assert_allclose(compiled[record_id], eager[record_id], atol=1e-5, rtol=1e-5)
