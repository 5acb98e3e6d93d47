"""FASTA reading: the streaming parser and indexed access against pysam / pyfaidx, and bad input."""

from __future__ import annotations

import gzip
import re
import shutil

import pyfaidx
import pysam
import pytest

from genolm.data import resolve_source
from genolm.genome import GenomeDataError, IndexedFasta, fasta_stats, iter_fasta_blocks, read_fai


def _records(location, block_size):
    """Reassemble the blocks of each record, checking that block starts tile the record."""
    out: dict[str, str] = {}
    for seq_id, start, bases in iter_fasta_blocks(location, block_size):
        assert start == len(out.get(seq_id, ""))
        assert start % block_size == 0
        out[seq_id] = out.get(seq_id, "") + bases.decode()
    return out


@pytest.mark.parametrize("name", ["athaliana_chr5_tail.fa.gz", "rice_chr2_1mb.fa.gz", "athaliana_chloroplast.fa"])
def test_stream_parser_matches_pysam(shared_data, name):
    path = shared_data / name
    parsed = _records(path, block_size=100_003)
    with pysam.FastaFile(str(path)) as reference:
        assert list(parsed) == list(reference.references)
        for seq_id, seq in parsed.items():
            assert seq == reference.fetch(seq_id)  # case kept (chr5 is soft-masked)


def test_stream_parser_reads_plain_gzip_with_several_records(shared_data, tmp_path):
    source = shared_data / "sources" / "braker_example_genome.fa.gz"  # plain gzip, 8 records
    with gzip.open(source, "rt") as fh:
        text = fh.read()
    expected = {}
    for chunk in text.split(">")[1:]:
        header, *lines = chunk.split("\n")
        expected[header.split()[0]] = "".join(lines)
    assert _records(source, block_size=50_000) == expected
    assert [f.indexed for f in resolve_source(source)] == [False]


def test_indexed_fetch_matches_pyfaidx(shared_data):
    path = shared_data / "athaliana_chloroplast.fa"
    fasta = IndexedFasta(path)
    reference = pyfaidx.Fasta(str(path), sequence_always_upper=False)
    for start, end in [(0, 1), (0, 60), (59, 61), (1000, 7777), (154_000, 154_478)]:
        assert fasta.fetch("NC_000932.1", start, end).decode() == str(reference["NC_000932.1"][start:end])
    with pytest.raises(GenomeDataError, match="outside the sequence"):
        fasta.fetch("NC_000932.1", 154_000, 154_479)
    with pytest.raises(GenomeDataError, match="no sequence 'chr9'"):
        fasta.fetch("chr9", 0, 10)


def test_indexed_bgzip_equals_stream(shared_data):
    path = shared_data / "athaliana_chr5_tail.fa.gz"
    (genome_file,) = resolve_source(path)
    assert genome_file.indexed and genome_file.gzi
    fasta = genome_file.open_indexed()
    streamed = _records(path, block_size=1 << 20)["Chr5_25975502_26975502"]
    assert fasta.fetch("Chr5_25975502_26975502", 333_333, 444_444).decode() == streamed[333_333:444_444]


def test_unusual_but_valid_input(shared_data, tmp_path):
    """Windows line endings, blank lines, lower case, IUPAC codes, ragged lines and a 3-base record."""
    with pysam.FastaFile(str(shared_data / "athaliana_chloroplast.fa")) as fa:
        seq = fa.fetch("NC_000932.1", 0, 5000)
    seq = seq[:100] + "RYKMSWBDHVN" + seq[111:200].lower() + seq[200:]
    lines = [seq[i : i + 70] for i in range(0, len(seq), 70)]
    text = "\r\n".join([">cp description here", *lines[:5], "", *lines[5:], ">tiny", "acg", ""])
    path = tmp_path / "odd.fa"
    path.write_bytes(text.encode())
    assert _records(path, block_size=1000) == {"cp": seq, "tiny": "acg"}
    stats = {s.seq_id: s for s in fasta_stats(path)}
    assert stats["cp"].ambiguous == 10  # R Y K M S W B D H V (N is counted separately)
    assert stats["cp"].n == seq.count("N")
    assert stats["cp"].lowercase == sum(c.islower() for c in seq)
    assert stats["tiny"].length == 3 and stats["tiny"].lowercase == 3


def test_truncated_and_corrupt_gzip(shared_data, tmp_path):
    data = (shared_data / "sources" / "braker_example_genome.fa.gz").read_bytes()
    truncated = tmp_path / "truncated.fa.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(GenomeDataError, match=r"truncated\.fa\.gz: truncated gzip stream: compressed data ends at byte offset \d+"):
        list(iter_fasta_blocks(truncated))
    corrupt = tmp_path / "corrupt.fa.gz"
    corrupt.write_bytes(data[:5000] + bytes(range(256)) * 4 + data[6024:])
    with pytest.raises(GenomeDataError, match=r"corrupt\.fa\.gz: corrupt gzip data near compressed byte offset \d+"):
        list(iter_fasta_blocks(corrupt))


def test_truncated_bgzip_with_index_is_rejected(shared_data, tmp_path):
    source = shared_data / "rice_chr2_1mb.fa.gz"
    target = tmp_path / "rice.fa.gz"
    target.write_bytes(source.read_bytes()[:200_000])
    for suffix in (".fai", ".gzi"):
        shutil.copy(f"{source}{suffix}", f"{target}{suffix}")
    with pytest.raises(GenomeDataError, match=r"rice\.fa\.gz: truncated bgzip file: no BGZF end-of-file marker"):
        resolve_source(target)


def test_fai_with_duplicate_ids(tmp_path):
    fai = tmp_path / "x.fa.fai"
    fai.write_text("a\t4\t3\t4\t5\nb\t2\t11\t2\t3\na\t2\t17\t2\t3\n")
    with pytest.raises(GenomeDataError, match=re.escape(f"{fai}: line 3: duplicate sequence id 'a' (first at line 1)")):
        read_fai(fai)


def test_missing_source(tmp_path):
    with pytest.raises(GenomeDataError, match="no such file or directory"):
        resolve_source(tmp_path / "nope.fa")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(GenomeDataError, match="folder contains no FASTA files"):
        resolve_source(tmp_path)


def test_invalid_character_in_indexed_file_names_line(tmp_path):
    path = tmp_path / "indexed.fa"
    path.write_text(">a\nACGTACGTAC\nACGTAC\n>b\nACGTACGTAC\nACGTACGTAC\nACG-TACGTA\nAC\n")
    pysam.faidx(str(path))
    (genome_file,) = resolve_source(path)
    assert genome_file.indexed
    fasta = genome_file.open_indexed()
    assert fasta.fetch("b", 0, 20) == b"ACGTACGTACACGTACGTAC"
    with pytest.raises(GenomeDataError, match=r"indexed\.fa: line 7, column 4: invalid character '-' in sequence 'b' \(position 23\)"):
        fasta.fetch("b", 15, 32)
