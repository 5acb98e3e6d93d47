"""The gene-function probe benchmark: GenBank product parsing, class rules and gene extraction."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gene_function_probe.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("gene_function_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_class_rules(probe):
    cases = {
        "photosystem II protein D1": "photosystem II",
        "photosystem I assembly protein Ycf3": "photosystem I",
        "photosystem I P700 chlorophyll a apoprotein A1": "photosystem I",
        "16S ribosomal RNA": "rRNA",
        "ribosomal protein L2": "ribosomal protein",
        "tRNA-Leu": "tRNA",
        "cytochrome b6/f complex subunit IV": "cytochrome b6f",
        "cytochrome c biogenesis protein": "other",
        "ATP-dependent Clp protease proteolytic subunit": "other",
        "RNA polymerase beta'' subunit": "RNA polymerase",
    }
    assert {p: probe.functional_class(p) for p in cases} == cases


def test_chloroplast_genes_from_gff3_and_genbank(probe, shared_data):
    products = probe.read_genbank_products(shared_data / "sources" / "NC_000932.gb")
    assert products["ArthCp002"] == {"type": "CDS", "gene": "psbA", "product": "photosystem II protein D1"}
    genes = probe.chloroplast_genes(shared_data)
    assert len(genes) == 127 and "rps12" not in set(genes.name)  # 129 genes minus 2 trans-spliced rps12
    coding = genes[~genes.label.isin(["tRNA", "rRNA"])]
    assert len(coding) == 83
    # spliced CDS in transcript orientation: whole codons ending in a stop
    assert (coding.sequence.str.len() % 3 == 0).all()
    assert coding.sequence.str[-3:].isin(["TAA", "TAG", "TGA"]).all()
    frequencies = probe.kmer_frequencies(list(genes.sequence[:3]), 3)
    assert frequencies.shape == (3, 64) and abs(frequencies.sum(1) - 1).max() < 1e-9


def test_probe_runs_end_to_end(probe, shared_data, capsys):
    summary = probe.main(["--data", str(shared_data), "--folds", "3"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == summary and summary["random_init"] and summary["n_genes"] == 127
