"""genolm.genome: one validated FASTA reader (streaming and indexed), index checks, the byte table shared with
the tokenizer, reverse complement and regions."""

from __future__ import annotations

import gzip
import os
import random
import shutil

import pyfaidx
import pytest

from genolm.data import resolve_source
from genolm.data.windows import TokenGeometry, WindowOptions, block_windows
from genolm.embed import embed_fasta
from genolm.errors import InputDataError, UserError
from genolm.finetune.data import load_records
from genolm.genome import (
    TO_ACGTN,
    VALID,
    GenomeDataError,
    Reference,
    Region,
    complement,
    index_problem,
    iter_fasta_blocks,
    normalise,
    parse_region,
    read_gff3,
    read_records,
    reverse_complement,
    sequence_lengths,
)
from genolm.genome import index as index_module
from genolm.inference import SNV, Genome, ism_region
from genolm.inference.ism import _overlapping_features
from genolm.inference.vep import check_variant

SHARED_FASTAS = ["athaliana_chloroplast.fa", "athaliana_chr5_tail.fa.gz", "rice_chr2_1mb.fa.gz"]


def _write_lines(path, records: dict[str, str], width: int = 60):
    with open(path, "w") as handle:
        for name, seq in records.items():
            handle.write(f">{name} description\n")
            handle.writelines(seq[i : i + width] + "\n" for i in range(0, len(seq), width))
    return path


def _random_seq(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ACGTacgtN") for _ in range(n))


# --- one validation, every reader ----------------------------------------------------------------
BAD_INPUTS = {
    "missing_header.fa": (b"ACGTACGT\nACGT\n", r"missing_header\.fa: line 1: missing '>' header"),
    "late_header.fa": (b"\n\nACGT\n>x\nACGT\n", r"late_header\.fa: line 3: missing '>' header"),
    "binary.fa": (b">x\nACGT\x00\x01\x02\n", r"binary\.fa: binary data at byte offset 7"),
    "empty_seq.fa": (b">x\nACGT\n>y\n>z\nAC\n", r"empty_seq\.fa: line 3: empty sequence for record 'y'"),
    "empty_last.fa": (b">x\nACGT\n>y\n", r"empty_last\.fa: line 3: empty sequence for record 'y'"),
    "duplicate.fa": (
        b">x\nACGT\n>y\nAC\n>x\nGG\n",
        r"duplicate\.fa: line 5: duplicate sequence id 'x' \(first defined at line 1\)",
    ),
    "star.fa": (b">x\nACGT\nAC*T\n", r"star\.fa: line 3, column 3: invalid character '\*'"),
    "digit.fa": (b">x\nACGTACGT\nACGTACGT\nACG7\n", r"digit\.fa: line 4, column 4: invalid character '7'"),
    "latin1.fa": (b">x\nACGT\nAC\xe9T\n", r"latin1\.fa: line 3, column 3: binary byte 0xe9"),
    "header_not_utf8.fa": (
        b">x\nACGT\n>ab\xff\nAC\n",
        r"header_not_utf8\.fa: line 3, column 4: header is not UTF-8",
    ),
    "empty_header.fa": (b">\nACGT\n", r"empty_header\.fa: line 1: empty FASTA header"),
    "empty.fa": (b"", r"empty\.fa: (empty file|no FASTA records)"),
    "truncated.fa.gz": (
        gzip.compress(b">x\n" + b"ACGT" * 5000 + b"\n")[:-40],
        r"truncated\.fa\.gz: truncated gzip",
    ),
}


def _read_everywhere(path):
    """Read ``path`` through every reader of the package and the callers built on it."""
    labels = path.parent / "labels.csv"
    labels.write_text("id,label\nx,1\n")
    yield lambda: list(iter_fasta_blocks(path))
    yield lambda: [
        list(iter_fasta_blocks(f.location)) for f in resolve_source(path)
    ]  # the training data path
    yield lambda: list(read_records(path))
    yield lambda: Reference(path)  # builds an index where it can: validates the whole file first
    yield lambda: Genome(path)
    yield lambda: sequence_lengths(path)
    yield lambda: load_records(path, labels_file=labels)
    yield lambda: embed_fasta("no-such-checkpoint", path)  # reads the FASTA before loading the model


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_every_reader_reports_bad_input_with_file_and_place(tmp_path, name):
    content, message = BAD_INPUTS[name]
    path = tmp_path / name
    for read in _read_everywhere(path):
        path.write_bytes(content)
        for index in tmp_path.glob(f"{name}.*"):
            index.unlink()
        with pytest.raises(GenomeDataError, match=message):
            read()
        assert not (tmp_path / f"{name}.fai").exists()  # no index is written for a bad file


def test_missing_file_is_a_user_error(tmp_path):
    path = tmp_path / "absent.fa"
    for read in _read_everywhere(path):
        with pytest.raises(
            GenomeDataError, match=r"absent\.fa: (FASTA file not found|no such file or directory)"
        ):
            read()


def test_invalid_character_found_by_indexed_fetch_names_line_and_column(tmp_path):
    import pysam

    path = _write_lines(tmp_path / "x.fa", {"a": "ACGT" * 30, "b": "ACGT" * 20 + "AC-T" + "ACGT" * 10})
    pysam.faidx(str(path))  # samtools indexes without validating
    reference = Reference(path)
    assert reference.fetch("b", 0, 80) == "ACGT" * 20
    with pytest.raises(
        GenomeDataError, match=r"x\.fa: line 6, column 23: invalid character '-'.*position 82"
    ):
        reference.fetch("b", 70, 90)


# --- indexed == streaming == pyfaidx ---------------------------------------------------------------
@pytest.mark.parametrize("name", SHARED_FASTAS)
def test_indexed_and_streaming_reads_equal_pyfaidx_on_both_strands(shared_data, tmp_path, name):
    source = shared_data / name
    text = gzip.decompress(source.read_bytes()) if name.endswith(".gz") else source.read_bytes()
    plain = tmp_path / "plain.fa"
    plain.write_bytes(text)
    streamed = tmp_path / "streamed.fa.gz"
    streamed.write_bytes(gzip.compress(text))  # plain gzip: no index possible, read into memory
    expected = pyfaidx.Fasta(str(plain), sequence_always_upper=False)
    indexed, in_memory = Reference(source), Reference(streamed)
    assert indexed.lengths == in_memory.lengths == {r: len(expected[r]) for r in expected.keys()}
    rng = random.Random(0)
    for seq_id, length in indexed.lengths.items():
        spans = [(0, length), (length - 1, length), (0, 1)]
        spans += [sorted(rng.sample(range(length + 1), 2)) for _ in range(20)]
        for start, end in spans:
            forward = str(expected[seq_id][start:end])
            minus = str(expected[seq_id][start:end].reverse.complement)
            for reference in (indexed, in_memory):
                assert reference.fetch(seq_id, start, end) == forward
                assert reference.fetch(seq_id, start, end, "-") == minus
                assert reference.fetch_strand(seq_id, length - end, length - start, "-") == minus
    assert dict(read_records(source)) == {r: str(expected[r]) for r in expected.keys()}


# --- index trust ---------------------------------------------------------------------------------
def _edited(tmp_path, *, newer: bool):
    """A two-record FASTA indexed, then edited (bases inserted into the first record)."""
    rng = random.Random(1)
    first, second = _random_seq(rng, 1000), _random_seq(rng, 700).replace("N", "A")
    path = _write_lines(tmp_path / "g.fa", {"first": first, "second": second})
    Reference(path)  # writes g.fa.fai
    fai = tmp_path / "g.fa.fai"
    assert fai.exists() and index_problem(path, fai) is None
    first = first[:500] + "GATTACA" + first[500:]
    _write_lines(path, {"first": first, "second": second})
    if newer:  # the index was written 10 s before the edit
        stamp = path.stat().st_mtime_ns - 10 * 10**9
        os.utime(fai, ns=(stamp, stamp))
    else:  # the edit kept an older modification time (copied with its times): only the geometry tells
        stamp = fai.stat().st_mtime_ns - 10 * 10**9
        os.utime(path, ns=(stamp, stamp))
    return path, fai, first, second


@pytest.mark.parametrize("newer", [True, False], ids=["edited-later", "mtime-preserved"])
def test_fasta_edited_after_indexing_is_reindexed(tmp_path, newer, mlm):
    path, fai, first, second = _edited(tmp_path, newer=newer)
    problem = index_problem(path, fai)
    assert problem is not None and ("modified after its index" in problem if newer else "g.fa" in problem)
    genome = Genome(path)  # rebuilds the stale index
    assert index_problem(path, fai) is None
    assert genome.lengths == {"first": 1007, "second": 700}
    # vep: a valid last position is in range, its REF matches
    last = SNV("second", 699, second[-1].upper(), "A" if second[-1].upper() != "A" else "C")
    assert check_variant(genome, last) is None
    assert genome.fetch("second", 600, 700) == second[600:]
    # ism: REF bases come from the right offsets
    model, tokenizer = mlm
    result = ism_region(model, tokenizer, genome, "second", 690, 700, window_tokens=16)
    assert result.ref == second[690:].upper()
    # annotate: lengths for the sequence-region lines and the last interval
    assert sequence_lengths(path) == {"first": 1007, "second": 700}


def test_stale_index_in_read_only_folder_is_refused(tmp_path, monkeypatch):
    path, fai, _, _ = _edited(tmp_path, newer=True)
    monkeypatch.setattr(index_module, "_folder_writable", lambda *paths: False)
    for read in (lambda: Reference(path), lambda: sequence_lengths(path)):
        with pytest.raises(GenomeDataError, match=r"g\.fa: stale index .*g\.fa\.fai .*not writable"):
            read()


def test_truncated_fasta_is_not_read_through_its_old_index(tmp_path, monkeypatch):
    path = _write_lines(tmp_path / "t.fa", {"a": "ACGT" * 100, "b": "GGCC" * 100})
    Reference(path)
    fai = tmp_path / "t.fa.fai"
    path.write_bytes(path.read_bytes()[:-200])
    os.utime(path, ns=(1, 1))  # older than the index: only the geometry tells
    assert "does not fit" in index_problem(path, fai)
    monkeypatch.setattr(index_module, "_folder_writable", lambda *paths: False)
    with pytest.raises(GenomeDataError, match=r"t\.fa: stale index .*t\.fa\.fai .*does not fit"):
        Reference(path)


def test_stale_bgzip_index_is_rebuilt(shared_data, tmp_path):
    import pysam
    from pysam.libcbgzf import BGZFile

    name = "athaliana_chr5_tail.fa.gz"
    for suffix in ("", ".fai", ".gzi"):
        shutil.copy(shared_data / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    path = tmp_path / name
    seq_id, sequence = next(read_records(path))
    sequence = "ACGTTTGA" * 5000 + sequence
    with BGZFile(str(path), "wb") as out:
        out.write(
            f">{seq_id}\n".encode()
            + b"\n".join(sequence[i : i + 60].encode() for i in range(0, len(sequence), 60))
            + b"\n"
        )
    earlier = path.stat().st_mtime_ns - 10 * 10**9
    for suffix in (".fai", ".gzi"):
        os.utime(tmp_path / f"{name}{suffix}", ns=(earlier, earlier))
    assert "modified after its index" in index_problem(
        path, tmp_path / f"{name}.fai", tmp_path / f"{name}.gzi"
    )
    reference = Reference(path)
    assert index_problem(path, tmp_path / f"{name}.fai", tmp_path / f"{name}.gzi") is None
    assert reference.lengths == {seq_id: len(sequence)}
    assert reference.fetch(seq_id, len(sequence) - 100, len(sequence)) == sequence[-100:]
    with pysam.FastaFile(str(path)) as check:
        assert check.fetch(seq_id, 39_990, 40_010) == sequence[39_990:40_010]


# --- the byte table shared with the tokenizer -----------------------------------------------------
def test_tokenizer_and_data_path_agree_on_u_and_x(tokenizer, tmp_path):
    text = "ACGTUAXACGTAC"
    expected = ["ACGTTA", "N", "ACGTAC"]
    assert tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"][1:]) == expected
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode_genome(text).tolist()) == expected
    path = tmp_path / "ux.fa"
    path.write_text(f">ux\n{text}\n")
    ((seq_id, start, bases),) = iter_fasta_blocks(path)
    rows = block_windows(bases, start, "sp", seq_id, TokenGeometry(tokenizer), WindowOptions(max_tokens=10))
    assert len(rows) == 1
    ids = rows[0]["input_ids"][1 : int(rows[0]["attention_mask"].sum())]
    assert tokenizer.convert_ids_to_tokens(ids.tolist()) == expected


def test_all_256_bytes_tokenizer_equals_reader_table(tokenizer, tmp_path):
    unk = tokenizer.unk_token_id
    rules = {**dict.fromkeys("ACGT"), "U": "T", **dict.fromkeys("NRYSWKMBDHVX", "N")}
    for value in range(256):
        char = chr(value)
        flank = b"ACGTAC"
        seq = flank + bytes([value]) + flank
        path = tmp_path / f"b{value}.fa"
        path.write_bytes(b">b\n" + seq + b"\n")
        ids = tokenizer.encode_genome(seq).tolist()
        if char.upper() in rules and value < 128:
            base = rules[char.upper()] or char.upper()
            assert VALID[value] and normalise(bytes([value])) == base.encode() == bytes([TO_ACGTN[value]])
            assert ids == tokenizer.encode_genome(flank + base.encode() + flank).tolist()
            assert b"".join(b for _, _, b in iter_fasta_blocks(path)) == seq  # case kept by the reader
            assert tokenizer(seq.decode())["input_ids"][1:] == ids
        elif char in " \t\r\n\v\f":
            assert not VALID[value] and ids == tokenizer.encode_genome(flank + flank).tolist()
        else:
            assert not VALID[value]
            assert ids == [
                *tokenizer.encode_genome(flank).tolist(),
                unk,
                *tokenizer.encode_genome(flank).tolist(),
            ]
            with pytest.raises(
                GenomeDataError, match=rf"b{value}\.fa: (line 2, column 7|binary data at byte)"
            ):
                list(iter_fasta_blocks(path))


# --- reverse complement ----------------------------------------------------------------------------
def test_reverse_complement_iupac_pairs_case_and_involution():
    pairs = {"A": "T", "C": "G", "R": "Y", "K": "M", "B": "V", "D": "H"}
    for x, y in pairs.items():
        for a, b in ((x, y), (y, x), (x.lower(), y.lower())):
            assert complement(a) == b and reverse_complement(a) == b
    for self_pair in "SWNXswnx":
        assert complement(self_pair) == self_pair
    assert reverse_complement("U") == "A" and reverse_complement("u") == "a"
    letters = "ACGTRYKMBVDHSWNXacgtrykmbvdhswnx"
    rng = random.Random(2)
    for _ in range(50):
        seq = "".join(rng.choice(letters) for _ in range(rng.randrange(0, 200)))
        assert reverse_complement(reverse_complement(seq)) == seq
        assert reverse_complement(seq.encode()) == reverse_complement(seq).encode()
        assert reverse_complement(seq) == complement(seq)[::-1]
        assert str(pyfaidx.Sequence("x", seq).reverse.complement) == reverse_complement(seq)


# --- regions --------------------------------------------------------------------------------------
def test_region_parser():
    lengths = {"chr1": 5000, "scaffold:7": 300}
    assert parse_region("chr1:1,001-2,000", lengths) == ("chr1", 1000, 2000)
    assert parse_region("chr1:1-1") == ("chr1", 0, 1)
    assert parse_region("chr1", lengths) == ("chr1", 0, 5000)
    assert parse_region("chr1") == ("chr1", 0, None)
    assert parse_region("scaffold:7", lengths) == ("scaffold:7", 0, 300)
    assert Region.parse("chr1:11-20").overlaps("chr1", 19, 30) and not Region.parse("chr1:11-20").overlaps(
        "chr1", 20, 30
    )
    assert str(Region.parse("chr1:11-20")) == "chr1:11-20"


@pytest.mark.parametrize(
    "text, message",
    [
        ("chr1:0-10", r"region 'chr1:0-10': need 1 <= START <= END"),
        ("chr1:20-10", r"region 'chr1:20-10': need 1 <= START <= END"),
        ("chr1:a-b", r"region 'chr1:a-b': expected SEQ:START-END with integer"),
        ("chr1:10", r"region 'chr1:10': expected SEQ:START-END"),
        (":1-10", r"region ':1-10': expected SEQ:START-END"),
        ("chr9:1-10", r"region 'chr9:1-10': no sequence named 'chr9' \(sequences: chr1\)"),
        ("chr1:4000-5001", r"region 'chr1:4000-5001': END 5001 is past the end of chr1 \(length 5000 bp\)"),
        ("", r"empty region"),
    ],
)
def test_region_parser_errors(text, message):
    with pytest.raises(UserError, match=message):
        parse_region(text, {"chr1": 5000})


# --- GFF3 -----------------------------------------------------------------------------------------
GOOD_LINE = "c\tsrc\tgene\t1\t10\t.\t+\t.\tID=g1"


@pytest.mark.parametrize(
    "content, message",
    [
        (
            f"{GOOD_LINE}\nc\tsrc\tgene\t5\t2\t.\t+\t.\tID=g2\n".encode(),
            r"bad\.gff3:2: invalid interval 5\.\.2",
        ),
        (
            f"##gff-version 3\n{GOOD_LINE}\tx\n".encode(),
            r"bad\.gff3:2: expected 9 tab-separated columns, found 10",
        ),
        (
            f"{GOOD_LINE}\nc\tsrc\tgene\t1\t10\thigh\t+\t.\tID=g2\n".encode(),
            r"bad\.gff3:2: score 'high' is not",
        ),
        (
            f"{GOOD_LINE}\n{GOOD_LINE};Note=caf\xe9\n".encode("latin-1"),
            r"bad\.gff3: line 2, column \d+: not UTF-8",
        ),
    ],
)
def test_gff3_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.gff3"
    path.write_bytes(content)
    with pytest.raises(InputDataError, match=message):
        read_gff3(path)


def test_truncated_gzip_gff3(shared_data, tmp_path):
    path = tmp_path / "annotation.gff3.gz"
    path.write_bytes(gzip.compress((shared_data / "athaliana_chloroplast.gff3").read_bytes())[:-100])
    with pytest.raises(
        InputDataError, match=r"annotation\.gff3\.gz: truncated or corrupt gzip after line \d+"
    ):
        read_gff3(path)


def test_ism_heatmap_features_come_from_the_gff3_reader(shared_data):
    path = shared_data / "athaliana_chloroplast.gff3"
    types = ("gene", "CDS", "tRNA")
    start, end = 1000, 12_000
    expected = set()
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if line.startswith("#") or len(fields) != 9 or fields[2] not in types:
            continue
        first, last = int(fields[3]), int(fields[4])
        if last > start and first <= end:  # 1-based closed [first, last] against 0-based [start, end)
            expected.add((fields[2], first - 1, last, fields[6]))
    features = _overlapping_features(path, "NC_000932.1", start, end, types)
    assert expected and {f[:4] for f in features} == expected
    assert all(isinstance(f[4], str) and f[4] for f in features)
