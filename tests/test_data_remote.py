"""NCBI accessions, HTTP streaming, the local cache and manifests, against a loopback mirror of NCBI's layout."""

from __future__ import annotations

import functools
import gzip
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from genolm.cli import build_parser, main
from genolm.data import (
    GenomeDataError,
    assembly_directory,
    build_ncbi_manifest,
    genome_dataset,
    load_manifest,
    resolve_accession,
    resolve_source,
)
from genolm.genome import iter_fasta_blocks

TAIR = "all/GCF/000/001/735"
HEADER = (
    "assembly_accession\tbioproject\tbiosample\twgs_master\trefseq_category\ttaxid\tspecies_taxid\torganism_name\t"
    "infraspecific_name\tisolate\tversion_status\tassembly_level\trelease_type\tgenome_rep\tseq_rel_date\tasm_name\t"
    "asm_submitter\tgbrs_paired_asm\tpaired_asm_comp\tftp_path\texcluded_from_refseq\trelation_to_type_material\t"
    "asm_not_live_date\tassembly_type\tgroup\tgenome_size"
)
# accession, category, taxid, species taxid, organism, status, level, date, assembly name, size
SUMMARY_ROWS = [
    ("GCF_000001735.4", "reference genome", "3702", "3702", "Arabidopsis thaliana", "latest", "Chromosome", "2018/03/15", "TAIR10.1", "119667750"),
    ("GCF_000001735.3", "reference genome", "3702", "3702", "Arabidopsis thaliana", "replaced", "Chromosome", "2011/05/11", "TAIR10", "119667750"),
    ("GCF_001433935.1", "reference genome", "39947", "4530", "Oryza sativa Japonica Group", "latest", "Chromosome", "2015/10/15", "IRGSP-1.0", "374424240"),
    ("GCF_000143415.4", "reference genome", "88036", "88036", "Selaginella moellendorffii", "latest", "Scaffold", "2011/03/15", "v1.0", "212307734"),
    # made-up second A. thaliana assembly: a later but non-reference one must lose to the reference
    ("GCF_900000001.1", "na", "3702", "3702", "Arabidopsis thaliana", "latest", "Complete Genome", "2023/01/01", "made_up", "135000000"),
]


def _summary_text() -> str:
    lines = ["#   See ftp://ftp.ncbi.nlm.nih.gov/genomes/README_assembly_summary.txt for a description of the columns.", "#" + HEADER]
    for acc, cat, taxid, sp_taxid, organism, status, level, date, name, size in SUMMARY_ROWS:
        values = [acc, "PRJNA0", "SAMN0", "", cat, taxid, sp_taxid, organism, "", "", status, level, "Major", "Full",
                  date, name, "submitter", "na", "na", f"https://ftp.ncbi.nlm.nih.gov/genomes/all/{name}", "", "", "na",
                  "haploid", "plant", size]
        lines.append("\t".join(values))
    return "\n".join(lines) + "\n"


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        if "/GCF/999/" in self.path:
            self.send_error(500, "Internal Server Error")
            return
        super().do_GET()


@pytest.fixture(scope="module")
def ncbi_mirror(shared_data, tmp_path_factory) -> Iterator[str]:
    """A throw-away HTTP server on 127.0.0.1 serving shared data in NCBI's genomes/ layout; yields its base URL."""
    root = tmp_path_factory.mktemp("mirror")
    genomes = root / "genomes"
    tair = genomes / TAIR / "GCF_000001735.4_TAIR10.1"
    tair.mkdir(parents=True)
    shutil.copy(shared_data / "athaliana_chr5_tail.fa.gz", tair / "GCF_000001735.4_TAIR10.1_genomic.fna.gz")
    (tair / "md5checksums.txt").write_text("0  ./GCF_000001735.4_TAIR10.1_genomic.fna.gz\n")
    old = genomes / TAIR / "GCF_000001735.3_TAIR10"
    old.mkdir()
    with open(shared_data / "athaliana_chloroplast.fa", "rb") as src, gzip.open(old / "GCF_000001735.3_TAIR10_genomic.fna.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)  # plain (non-bgzip) gzip
    rice = genomes / "all/GCF/001/433/935/GCF_001433935.1_IRGSP-1.0"
    rice.mkdir(parents=True)
    shutil.copy(shared_data / "rice_chr2_1mb.fa.gz", rice / "GCF_001433935.1_IRGSP-1.0_genomic.fna.gz")
    (genomes / "all/GCF/000/000/002").mkdir(parents=True)
    (genomes / "refseq/plant").mkdir(parents=True)
    (genomes / "refseq/plant/assembly_summary.txt").write_text(_summary_text())
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/genomes"
    finally:
        server.shutdown()
        server.server_close()


def _read_all(location: str) -> None:
    (genome_file,) = resolve_source(location)
    list(iter_fasta_blocks(genome_file.location))


def _key(row) -> tuple:
    return row["seq_id"], row["start"], row["end"], row["strand"], row["input_ids"].tobytes()


def test_accession_resolves_through_directory_listing(ncbi_mirror, monkeypatch):
    expected = f"{ncbi_mirror}/{TAIR}/GCF_000001735.4_TAIR10.1/GCF_000001735.4_TAIR10.1_genomic.fna.gz"
    assert resolve_accession("GCF_000001735.4", ncbi_mirror) == expected
    assert resolve_accession("GCF_000001735", ncbi_mirror) == expected  # no version: the highest listed
    assert assembly_directory("GCF_000001735.3", ncbi_mirror).endswith("/GCF_000001735.3_TAIR10")
    monkeypatch.setenv("GENOLM_NCBI_URL", ncbi_mirror)
    assert resolve_accession("GCF_000001735.4") == expected


def test_streamed_accession_matches_local_file(ncbi_mirror, shared_data, tokenizer):
    kwargs = {"max_tokens": 500, "split": None, "reverse_complement": 0.5, "block_size": 250_000, "num_shards": 1}
    remote = genome_dataset({"thaliana": "GCF_000001735.4"}, tokenizer, ncbi_url=ncbi_mirror, **kwargs)
    local = genome_dataset({"thaliana": shared_data / "athaliana_chr5_tail.fa.gz"}, tokenizer, **kwargs)
    remote_rows = list(remote)
    # one shard, same species and seed: the same windows and strands, whether streamed over HTTP or indexed
    assert [_key(r) for r in remote_rows] == [_key(r) for r in local]
    assert {r["strand"] for r in remote_rows} == {"+", "-"}
    assert {r["species"] for r in genome_dataset("GCF_000001735.4", tokenizer, ncbi_url=ncbi_mirror, **kwargs)} == {"GCF_000001735.4"}


def test_cache_dir_keeps_an_indexed_copy(ncbi_mirror, tmp_path, tokenizer):
    (genome_file,) = resolve_source("GCF_000001735.3", "thaliana", ncbi_url=ncbi_mirror, cache_dir=tmp_path)
    assert genome_file.indexed and Path(genome_file.location).is_relative_to(tmp_path)
    assert Path(genome_file.fai).exists() and Path(genome_file.gzi).exists()
    stamp = Path(genome_file.location).stat().st_mtime_ns
    again = resolve_source("GCF_000001735.3", "thaliana", ncbi_url=ncbi_mirror, cache_dir=tmp_path)
    assert again == [genome_file] and Path(genome_file.location).stat().st_mtime_ns == stamp
    kwargs = {"max_tokens": 1000, "split": None}
    cached = [_key(r) for r in genome_dataset("GCF_000001735.3", tokenizer, ncbi_url=ncbi_mirror, cache_dir=tmp_path, **kwargs)]
    streamed = [_key(r) for r in genome_dataset("GCF_000001735.3", tokenizer, ncbi_url=ncbi_mirror, **kwargs)]
    assert cached == streamed and cached[-1][2] == 154_478


def test_unknown_accessions_and_http_errors(ncbi_mirror):
    with pytest.raises(GenomeDataError, match=rf"unknown accession GCF_000000001\.1: HTTP 404 Not Found: {ncbi_mirror}/all/GCF/000/000/001/"):
        resolve_accession("GCF_000000001.1", ncbi_mirror)
    with pytest.raises(GenomeDataError, match=rf"unknown accession GCF_000000002\.1: no assembly directory for it in {ncbi_mirror}/all/GCF/000/000/002/"):
        resolve_accession("GCF_000000002.1", ncbi_mirror)
    with pytest.raises(GenomeDataError, match=r"unknown accession GCF_000001735\.9: no assembly directory"):
        resolve_accession("GCF_000001735.9", ncbi_mirror)
    with pytest.raises(GenomeDataError, match=rf"HTTP 500 .*{ncbi_mirror}/all/GCF/999/000/001/"):
        resolve_accession("GCF_999000001.1", ncbi_mirror)
    missing = f"{ncbi_mirror}/{TAIR}/GCF_000001735.4_TAIR10.1/nope.fna.gz"
    with pytest.raises(GenomeDataError, match=rf"HTTP 404 Not Found: {missing}"):
        _read_all(missing)
    with pytest.raises(GenomeDataError, match="not an NCBI assembly accession"):
        assembly_directory("GCF_12345", ncbi_mirror)


def test_build_manifest_from_assembly_summary(ncbi_mirror, tmp_path, tokenizer):
    entries = build_ncbi_manifest(tmp_path / "plants.tsv", group="plant", base_url=ncbi_mirror)
    assert [(e.species, e.source) for e in entries] == [
        ("Arabidopsis thaliana", "GCF_000001735.4"),  # reference beats the newer non-reference assembly
        ("Oryza sativa Japonica Group", "GCF_001433935.1"),
    ]  # replaced versions and scaffold-level assemblies are left out
    assert entries[0].metadata["assembly_name"] == "TAIR10.1"
    every = build_ncbi_manifest(None, base_url=ncbi_mirror, levels=None, one_per_species=False)
    assert [e.source for e in every] == ["GCF_000001735.4", "GCF_001433935.1", "GCF_000143415.4", "GCF_900000001.1"]
    rice = build_ncbi_manifest(None, base_url=ncbi_mirror, taxids=["4530"], weighting="size")
    assert [e.source for e in rice] == ["GCF_001433935.1"] and rice[0].weight == pytest.approx(374.42424)
    assert [e.source for e in build_ncbi_manifest(None, base_url=ncbi_mirror, organism="^oryza")] == ["GCF_001433935.1"]
    # the written manifest streams from the mirror
    reloaded = load_manifest(tmp_path / "plants.tsv")
    assert [(e.species, e.source, e.weight) for e in reloaded] == [(e.species, e.source, 1.0) for e in entries]
    ds = genome_dataset(tmp_path / "plants.tsv", tokenizer, max_tokens=200, split=None, ncbi_url=ncbi_mirror, seed=2)
    species = {row["species"] for _, row in zip(range(40), ds, strict=False)}
    assert species == {"Arabidopsis thaliana", "Oryza sativa Japonica Group"}
    with pytest.raises(GenomeDataError, match="no assembly matches the filters"):
        build_ncbi_manifest(None, base_url=ncbi_mirror, organism="Zea")
    with pytest.raises(GenomeDataError, match=rf"HTTP 404 Not Found: {ncbi_mirror}/refseq/fungi/assembly_summary.txt"):
        build_ncbi_manifest(None, group="fungi", base_url=ncbi_mirror)


def test_bad_assembly_summary(tmp_path):
    bad = tmp_path / "summary.txt"
    bad.write_text("GCF_000001735.4\tPRJNA116\n")
    with pytest.raises(GenomeDataError, match=r"summary\.txt: line 1: data before the '# assembly_accession"):
        build_ncbi_manifest(None, summary=bad)


def test_manifest_command(ncbi_mirror, tmp_path, capsys):
    parser = build_parser()
    out = tmp_path / "m.tsv"
    args = parser.parse_args(["data", "manifest", "--ncbi-group", "plant", "--level", "chromosome,complete",
                              "--ncbi-url", ncbi_mirror, str(out)])
    assert args.func(args) == 0
    assert "wrote 2 assemblies" in capsys.readouterr().out
    assert [e.source for e in load_manifest(out)] == ["GCF_000001735.4", "GCF_001433935.1"]
    out2 = tmp_path / "m2.tsv"
    assert main(["data", "manifest", "--level", "all", "--all-assemblies", "--ncbi-url", ncbi_mirror, str(out2)]) == 0
    assert len(load_manifest(out2)) == 4
    assert main(["data", "manifest", "--organism", "Zea", "--ncbi-url", ncbi_mirror, str(out2)]) == 2
