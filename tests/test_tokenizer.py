"""GenoLMTokenizer: NT's k-mer rule, both vocabulary layouts, the numpy paths and save / reload."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, EsmTokenizer

import genolm.tokenization_genolm as tokenization
from genolm import GenoLMTokenizer

IUPAC = "RYSWKMBDHV"


def nt_vocab(layout: str, k: int) -> list[str]:
    """The published vocabularies, written out independently of genolm (see the class docstring)."""
    kmers = ["".join(p) for p in itertools.product("ATCG", repeat=k)]
    singles = ["N"] if k == 1 else ["A", "T", "C", "G", "N"]
    if layout == "nt-v1":
        return ["<unk>", "<pad>", "<mask>", "<cls>", *kmers, *singles, "<eos>", "<bos>"]
    return ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>", *kmers, *singles]


def nt_reference(seq: str, vocab: list[str], k: int) -> list[int]:
    """NT's rule on upper-case A/C/G/T/N, as in its NucleotidesKmersTokenizer: split at N, k-mers left to
    right in each run, leftovers one by one, <cls> first."""
    tokens = []
    runs = seq.split("N")
    for i, run in enumerate(runs):
        full = len(run) // k * k
        tokens += [run[j : j + k] for j in range(0, full, k)] + list(run[full:])
        if i < len(runs) - 1:
            tokens.append("N")
    index = {t: i for i, t in enumerate(vocab)}
    return [index["<cls>"]] + [index[t] for t in tokens]


def extended_reference(seq: str, vocab: list[str], k: int) -> list[int]:
    """genolm's documented extension: case folded, IUPAC codes, X and N -> N, U -> T, ASCII whitespace ignored,
    any other character one <unk> that ends the run."""
    index = {t: i for i, t in enumerate(vocab)}
    ids, run = [index["<cls>"]], ""

    def flush(run: str) -> list[int]:
        full = len(run) // k * k
        return [index[run[j : j + k]] for j in range(0, full, k)] + [index[b] for b in run[full:]]

    for ch in seq:
        if ch in " \t\n\r\x0b\x0c":
            continue
        base = {"U": "T"}.get(ch.upper(), ch.upper()) if ch.isascii() else None
        if base in ("A", "C", "G", "T"):
            run += base
            continue
        ids += flush(run)
        run = ""
        ids.append(index["N"] if base is not None and (base in ("N", "X") or base in IUPAC) else index["<unk>"])
    return ids + flush(run)


def esm_reference(tmp_path, layout: str, k: int = 6) -> EsmTokenizer:
    """NT's Hugging Face tokenizer: EsmTokenizer with NT's vocab.txt and no <eos> (eos_token: null)."""
    path = tmp_path / f"vocab-{layout}-{k}.txt"
    path.write_text("\n".join(nt_vocab(layout, k)))
    return EsmTokenizer(str(path), eos_token=None)


def read_real(shared_data, name: str, start: int, end: int) -> str:
    pysam = pytest.importorskip("pysam")
    with pysam.FastaFile(str(shared_data / name)) as fasta:
        return fasta.fetch(fasta.references[0], start, end)


def random_sequence(rng: random.Random, length: int, alphabet: str = "ACGT", n_rate: float = 0.1) -> str:
    return "".join("N" if rng.random() < n_rate else rng.choice(alphabet) for _ in range(length))


def as_lists(encoding) -> dict:
    return {key: value.tolist() if hasattr(value, "tolist") else value for key, value in encoding.items()}


@pytest.fixture(scope="module")
def tok() -> GenoLMTokenizer:
    return GenoLMTokenizer()


@pytest.fixture(scope="module")
def tok_v2() -> GenoLMTokenizer:
    return GenoLMTokenizer(vocab_layout="nt-v2")


# --------------------------------------------------------------------------------------------------------------
# vocabulary
# --------------------------------------------------------------------------------------------------------------
def test_nt_v1_layout(tok):
    vocab = tok.get_vocab()
    assert len(tok) == tok.vocab_size == 4107
    assert [vocab[t] for t in ("<unk>", "<pad>", "<mask>", "<cls>")] == [0, 1, 2, 3]
    assert (vocab["AAAAAA"], vocab["AAAAAT"], vocab["GGGGGG"]) == (4, 5, 4099)
    assert [vocab[b] for b in "ATCGN"] == [4100, 4101, 4102, 4103, 4104]
    assert (vocab["<eos>"], vocab["<bos>"]) == (4105, 4106)
    assert all(vocab[t] == i for i, t in enumerate(nt_vocab("nt-v1", 6)))
    assert (tok.unk_token_id, tok.pad_token_id, tok.mask_token_id, tok.cls_token_id) == (0, 1, 2, 3)
    assert tok.eos_token_id is None and tok.bos_token_id is None
    assert (tok.k, tok.vocab_layout) == (6, "nt-v1")
    assert tok.kmer_ids.dtype == np.int32 and tok.kmer_ids.tolist() == list(range(4, 4100))
    assert tok.nucleotide_ids == {"A": 4100, "T": 4101, "C": 4102, "G": 4103, "N": 4104}


def test_nt_v2_layout(tok_v2):
    vocab = tok_v2.get_vocab()
    assert len(tok_v2) == 4107
    assert [vocab[t] for t in ("<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>")] == list(range(6))
    assert (vocab["AAAAAA"], vocab["GGGGGG"]) == (6, 4101)
    assert tok_v2.nucleotide_ids == {"A": 4102, "T": 4103, "C": 4104, "G": 4105, "N": 4106}
    assert all(vocab[t] == i for i, t in enumerate(nt_vocab("nt-v2", 6)))
    assert tok_v2.kmer_ids.tolist() == list(range(6, 4102))
    assert tok_v2("ATGCATGCN")["input_ids"] == [3, 6 + 0b00_01_11_10_00_01, 4105, 4104, 4106]


@pytest.mark.parametrize("layout", ["nt-v1", "nt-v2"])
@pytest.mark.parametrize("k", [1, 3])
def test_other_k(layout, k):
    tok = GenoLMTokenizer(vocab_layout=layout, k=k)
    vocab = tok.get_vocab()
    assert len(tok) == 4**k + (1 if k == 1 else 5) + 6
    assert all(vocab[t] == i for i, t in enumerate(nt_vocab(layout, k)))
    kmers = ["".join(p) for p in itertools.product("ATCG", repeat=k)]
    assert tok.kmer_ids.tolist() == [vocab[m] for m in kmers]
    assert set(tok.nucleotide_ids) == set("ATCGN")
    seq = "ACGTACGTNAC"
    assert tok(seq)["input_ids"] == nt_reference(seq, nt_vocab(layout, k), k)
    if k == 1:  # single-nucleotide model: the k-mers are the bases, nothing duplicated
        assert tok.nucleotide_ids["A"] == tok.kmer_ids[0]
        assert tok.convert_ids_to_tokens(tok(seq)["input_ids"]) == ["<cls>", *seq]


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="vocab_layout"):
        GenoLMTokenizer(vocab_layout="nt-v3")
    for k in (0, 9, 2.0):
        with pytest.raises(ValueError, match="k must be"):
            GenoLMTokenizer(k=k)
    GenoLMTokenizer(vocab_layout="nt-v2").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not match vocab_layout='nt-v1'"):
        GenoLMTokenizer.from_pretrained(tmp_path, vocab_layout="nt-v1")


# --------------------------------------------------------------------------------------------------------------
# NT's rule and NT's own tokenizer
# --------------------------------------------------------------------------------------------------------------
def test_examples(tok):
    def tokens(seq):
        return tok.convert_ids_to_tokens(tok(seq)["input_ids"])

    assert tokens("ATGCATGCNAAAAAAT") == ["<cls>", "ATGCAT", "G", "C", "N", "AAAAAA", "T"]
    assert tokens("TAAAAAA") == ["<cls>", "TAAAAA", "A"]
    assert tokens("NNATGCATN") == ["<cls>", "N", "N", "ATGCAT", "N"]
    assert tokens("") == ["<cls>"]
    assert tokens("ACCTGA<mask>TTCTGAGTC") == ["<cls>", "ACCTGA", "<mask>", "TTCTGA", "G", "T", "C"]


@pytest.mark.parametrize("layout", ["nt-v1", "nt-v2"])
@pytest.mark.parametrize("k", [1, 2, 6])
def test_reference_rule(layout, k):
    rng = random.Random(k)
    tok = GenoLMTokenizer(vocab_layout=layout, k=k)
    vocab = nt_vocab(layout, k)
    seqs = [
        random_sequence(rng, rng.randrange(0, 40), n_rate=rng.choice([0.0, 0.05, 0.3])) for _ in range(60)
    ]
    seqs += ["N" * 5, "A" * k, "A" * (k - 1), "A" * (k + 1) + "N", "N" + "C" * (2 * k)]
    expected = [nt_reference(s, vocab, k) for s in seqs]
    assert [tok(s)["input_ids"] for s in seqs] == expected  # backend, one sequence at a time
    assert tok(seqs)["input_ids"] == expected  # batched (numpy path)
    assert [[tok.cls_token_id, *tok.encode_genome(s).tolist()] for s in seqs] == expected


def test_matches_esm_tokenizer_on_real_sequence(shared_data, tmp_path, tok, tok_v2):
    """Real chr5 and chloroplast sequence with N runs inserted at run starts, ends and next to each other."""
    rng = random.Random(0)
    chr5 = read_real(shared_data, "athaliana_chr5_tail.fa.gz", 600_000, 612_000).upper()
    cp = read_real(shared_data, "athaliana_chloroplast.fa", 0, 6_000)
    windows = [chr5[i : i + 6000 - d] for i, d in ((0, 0), (6000, 5))] + [cp]
    for i in range(len(windows)):
        seq = list(windows[i])
        for _ in range(12):
            at = rng.randrange(len(seq))
            seq[at:at] = "N" * rng.choice([1, 1, 2, 5, 13, 100])
        windows[i] = "N" + "".join(seq) + "NNAC"
    esm = esm_reference(tmp_path, "nt-v1")
    expected = esm(windows)["input_ids"]
    assert tok(windows)["input_ids"] == expected
    assert [tok(w)["input_ids"] for w in windows] == expected
    assert [[3, *tok.encode_genome(w).tolist()] for w in windows] == expected
    assert expected == [nt_reference(w, nt_vocab("nt-v1", 6), 6) for w in windows]
    assert tok_v2(windows)["input_ids"] == esm_reference(tmp_path, "nt-v2")(windows)["input_ids"]


def test_soft_mask_iupac_and_other_characters(tok):
    ids = tok("ATGCATGCAnatgcat")["input_ids"]
    assert ids == tok("ATGCATGCANATGCAT")["input_ids"]  # soft-masked bases: same ids, not <unk>
    assert tok("acgtacRYSWKMBDHVu")["input_ids"] == tok("ACGTACNNNNNNNNNNT")["input_ids"]
    assert tok("rysWKmbdhv")["input_ids"] == tok("N" * 10)["input_ids"]
    assert tok("AUGGCU")["input_ids"] == tok("ATGGCT")["input_ids"]  # RNA
    assert (
        tok("ATG CAT\nATGCAT\r\n\tA")["input_ids"] == tok("ATGCATATGCATA")["input_ids"]
    )  # whitespace ignored
    unk = tok.unk_token_id
    # anything else: one <unk> per character, ending the run like N does
    assert tok("ATGCA-TGCATG")["input_ids"] == [
        3,
        *tok("ATGCA")["input_ids"][1:],
        unk,
        tok("TGCATG")["input_ids"][1],
    ]
    assert tok("XxX")["input_ids"] == tok("NNN")["input_ids"]  # hard mask, read as the genome readers read it
    for weird in ("*", "-", ".", "0", "é", "<", "\x00"):
        assert tok(weird * 3)["input_ids"] == [3, unk, unk, unk]
        assert tok.encode_genome(weird * 3).tolist() == [unk] * 3


def test_paths_agree_on_arbitrary_text(tok):
    """Backend (normalizer + regex), numpy batch path, encode_genome and the Python reference agree."""
    rng = random.Random(1)
    alphabet = "ACGTACGTACGTacgtNnRyUu-*.0Xé \n\t"
    seqs = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60))) for _ in range(200)]
    expected = [extended_reference(s, nt_vocab("nt-v1", 6), 6) for s in seqs]
    assert [tok(s)["input_ids"] for s in seqs] == expected
    assert tok(seqs)["input_ids"] == expected
    assert [[3, *tok.encode_genome(s).tolist()] for s in seqs] == expected
    assert [[3, *tok.encode_genome(s.encode("utf-8", "replace")).tolist()] for s in seqs if s.isascii()] == [
        e for s, e in zip(seqs, expected) if s.isascii()
    ]


# --------------------------------------------------------------------------------------------------------------
# encode_genome / decode_genome
# --------------------------------------------------------------------------------------------------------------
def test_encode_genome_on_real_genome(shared_data, tok):
    seq = read_real(shared_data, "athaliana_chr5_tail.fa.gz", 0, 200_000)  # soft-masked: lower case inside
    assert any(c.islower() for c in seq)
    ids = tok.encode_genome(seq)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert ids.tolist() == tok(seq)["input_ids"][1:]
    assert np.array_equal(ids, tok.encode_genome(seq.upper().encode()))
    assert tok.decode_genome(ids) == seq.upper()


def test_encode_genome_chunks(monkeypatch, tok):
    """Long chromosomes are tokenized in chunks; the chunk borders must not show."""
    rng = random.Random(2)
    seqs = [random_sequence(rng, 500, alphabet="ACGTacgt-", n_rate=r) for r in (0.0, 0.01, 0.1, 0.5)]
    seqs.append("A" * 499)
    expected = [tok.encode_genome(s) for s in seqs]
    for chunk in (1, 6, 7, 13, 64):
        monkeypatch.setattr(tokenization, "_GENOME_CHUNK", chunk)
        for s, e in zip(seqs, expected):
            assert np.array_equal(tok.encode_genome(s), e), chunk


def test_encode_genome_inputs(tok):
    seq = "ACGTACGTNac"
    ids = tok.encode_genome(seq)
    for form in (seq.encode(), bytearray(seq.encode()), memoryview(seq.encode())):
        assert np.array_equal(tok.encode_genome(form), ids)
    empty = tok.encode_genome("")
    assert empty.dtype == np.int32 and empty.shape == (0,)
    with pytest.raises(TypeError, match="str or bytes"):
        tok.encode_genome([65, 67])


def test_decode(tok):
    seq = "ATGCATGCNAAAAAATnrGu"
    batch = tok([seq, "AC"], padding=True, return_tensors="pt")
    assert tok.decode_genome(batch["input_ids"][0]) == "ATGCATGCNAAAAAATNNGT"
    assert tok.decode_genome(batch["input_ids"][1]) == "AC"
    assert tok.decode_genome([3, 2, 4100], skip_special_tokens=False) == "<cls><mask>A"
    assert tok.decode(tok(seq)["input_ids"], skip_special_tokens=True) == "ATGCATGCNAAAAAATNNGT"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode_genome([5000])


# --------------------------------------------------------------------------------------------------------------
# padding, truncation and the two __call__ paths
# --------------------------------------------------------------------------------------------------------------
CALL_OPTIONS = [
    {},
    {"padding": True},
    {"padding": "max_length", "max_length": 12},
    {"padding": "max_length", "max_length": 3},  # longer rows stay longer
    {"truncation": True, "max_length": 4},
    {"truncation": True, "max_length": 1},
    {"padding": True, "pad_to_multiple_of": 8},
    {"padding": True, "padding_side": "left"},
    {"padding": True, "truncation": True, "max_length": 5, "return_tensors": "pt"},
    {"padding": True, "return_tensors": "np"},
    {"add_special_tokens": False, "padding": True},
    {"return_attention_mask": False, "padding": True},
]


@pytest.mark.parametrize("options", CALL_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_numpy_call_path_matches_backend(options):
    tok = GenoLMTokenizer()
    seqs = ["ACGTACGTAC", "NNACGTACGTACGTACGTACGTA", "", "acgtnrT", "A" * 13]
    fast = tok(seqs, **options)
    tok.numpy_batch_encode = False
    slow = tok(seqs, **options)
    assert fast.encodings is None and slow.encodings is not None  # the numpy path was taken
    assert as_lists(fast) == as_lists(slow)
    for key in fast:
        assert type(fast[key]) is type(slow[key])
        if isinstance(fast[key], torch.Tensor):
            assert fast[key].dtype == slow[key].dtype == torch.int64


def test_padding_and_truncation(tok):
    seqs = ["ACGTACGTACGTACGTACGTACGT", "ACGTAC", "A"]
    out = tok(seqs, padding="longest", return_tensors="pt")
    assert out["input_ids"].shape == (3, 5)
    assert out["input_ids"][:, 0].tolist() == [3, 3, 3]
    assert out["input_ids"][2].tolist() == [3, 4100, 1, 1, 1]
    assert out["attention_mask"].tolist() == [[1] * 5, [1, 1, 0, 0, 0], [1, 1, 0, 0, 0]]
    out = tok(seqs, padding="max_length", max_length=8)
    assert [len(ids) for ids in out["input_ids"]] == [8, 8, 8]
    out = tok(seqs, truncation=True, max_length=3)  # <cls> counts towards max_length
    assert out["input_ids"][0] == [3, *tok.encode_genome(seqs[0])[:2].tolist()]
    tok_left = GenoLMTokenizer(truncation_side="left", padding_side="left", model_max_length=3)
    out = tok_left(seqs, truncation=True, padding=True)
    assert out["input_ids"][0] == [3, *tok.encode_genome(seqs[0])[-2:].tolist()]
    assert out["input_ids"][2] == [1, 3, 4100] and out["attention_mask"][2] == [0, 1, 1]
    assert tok("A" * 60, truncation=True, max_length=4)["input_ids"] == [3] + [4] * 3


def test_special_token_text_uses_backend(tok):
    out = tok(["ACCTGA<mask>TTCTGAGTC", "ACGT"], padding=True)
    assert out.encodings is not None
    assert out["input_ids"][0][:3] == [3, tok.get_vocab()["ACCTGA"], tok.mask_token_id]
    assert tok.tokenize("ATGCATG") == ["ATGCAT", "G"]


# --------------------------------------------------------------------------------------------------------------
# save / reload
# --------------------------------------------------------------------------------------------------------------
RELOAD_SCRIPT = """
import json, sys
from transformers import AutoTokenizer
seqs = json.loads(sys.argv[1])
results = []
for path in sys.argv[2:]:
    tok = AutoTokenizer.from_pretrained(path)
    results.append({"class": type(tok).__name__, "single": [tok(s)["input_ids"] for s in seqs],
                    "batch": tok(seqs, padding=True)["input_ids"],
                    "decoded": tok.decode(tok(seqs[0])["input_ids"], skip_special_tokens=True),
                    "pad": tok.pad_token_id, "mask": tok.mask_token_id, "max_length": tok.model_max_length})
loaded = sorted(m for m in sys.modules if m == "genolm" or m.startswith("genolm."))
print(json.dumps({"genolm_modules": loaded, "results": results}))
"""


def test_reload_without_genolm(tmp_path):
    """A saved tokenizer loads with plain AutoTokenizer in a process that never imports genolm."""
    tokenizers = [GenoLMTokenizer(vocab_layout="nt-v2", model_max_length=2048), GenoLMTokenizer(k=3)]
    paths = [tmp_path / "nt-v2-k6", tmp_path / "nt-v1-k3"]
    for tok, path in zip(tokenizers, paths):
        tok.save_pretrained(path)
        config = json.loads((path / "tokenizer_config.json").read_text())
        assert (config["vocab_layout"], config["k"]) == (tok.vocab_layout, tok.k)
        assert config["tokenizer_class"] == "GenoLMTokenizer"
    seqs = ["ATGCATGCNAAAAAAT", "acgtacgtRYN-ACGT", "", "GATTACA" * 40]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, json.dumps(seqs), *map(str, paths)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["genolm_modules"] == []
    for tok, reloaded in zip(tokenizers, out["results"]):
        assert reloaded["class"] != "GenoLMTokenizer"
        assert reloaded["single"] == [tok(s)["input_ids"] for s in seqs]
        assert reloaded["batch"] == tok(seqs, padding=True)["input_ids"]
        assert reloaded["decoded"] == "ATGCATGCNAAAAAAT"
        assert (reloaded["pad"], reloaded["mask"]) == (tok.pad_token_id, tok.mask_token_id)
    assert out["results"][0]["max_length"] == 2048


def test_reload_with_genolm(tmp_path):
    tok = GenoLMTokenizer(vocab_layout="nt-v2", k=3, model_max_length=512)
    tok.save_pretrained(tmp_path)
    for loaded in (GenoLMTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert type(loaded) is GenoLMTokenizer
        assert (loaded.vocab_layout, loaded.k, loaded.model_max_length) == ("nt-v2", 3, 512)
        assert np.array_equal(loaded.kmer_ids, tok.kmer_ids)
        assert (
            loaded(["ACGTACGTN", "ac"], padding=True)["input_ids"]
            == tok(["ACGTACGTN", "ac"], padding=True)["input_ids"]
        )


@pytest.mark.parametrize("layout", ["nt-v1", "nt-v2"])
def test_from_published_nt_folder(tmp_path, layout):
    """A published NT / AgroNT tokenizer folder (EsmTokenizer files): vocab.txt sets the layout and k."""
    (tmp_path / "vocab.txt").write_text("\n".join(nt_vocab(layout, 6)))
    config = {"eos_token": None, "model_max_length": 1024, "tokenizer_class": "EsmTokenizer"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = GenoLMTokenizer.from_pretrained(tmp_path)
    assert (tok.vocab_layout, tok.k, tok.model_max_length) == (layout, 6, 1024)
    seq = "ATGCATGCNAAAAAAT"
    assert tok(seq)["input_ids"] == esm_reference(tmp_path, layout)(seq)["input_ids"]
    (tmp_path / "vocab.txt").write_text("\n".join(nt_vocab(layout, 6)[::-1]))
    with pytest.raises(ValueError, match="neither the nt-v1 nor the nt-v2 layout"):
        GenoLMTokenizer.from_pretrained(tmp_path)
