"""Gene-function probe: predict the functional class of every Arabidopsis chloroplast gene from its sequence.

In the spirit of GO-term prediction from embeddings: each gene of the chloroplast GFF3 (spliced: CDS for
protein-coding genes, exons for tRNAs and rRNAs, in transcript orientation) is embedded with a genolm
checkpoint (mean of the last layer's token states), and a linear probe (standardised features, L2 logistic
regression) predicts its class, cross-validated. Classes come from the GenBank ``/product`` names
(``sources/NC_000932.gb``): photosystem I / II, cytochrome b6f, ATP synthase, NADH dehydrogenase, RNA
polymerase, ribosomal protein, tRNA, rRNA, other.

The same folds and probe are run on three baselines computed without a model: overlapping k-mer
frequencies, (log length, GC content), and the majority class. Folds are grouped by gene name, because the
inverted repeat holds identical copies of about 15 genes (rpl2, ndhB, rrn16, ...): a copy in the training
fold would make its twin trivially predictable. The two trans-spliced rps12 genes are left out (their
segment order is not in the GFF3).

Without ``--model`` a tiny randomly initialised model is used, which tests the pipeline, not a pretrained
representation (its mean-pooled states are close to a random projection of k-mer composition); pass a
pretrained checkpoint (e.g. AgroNT converted with ``genolm convert esm-to-genolm``) for a real measurement.

Usage::

    python benchmarks/gene_function_probe.py --data ../shared/data [--model CKPT] [--folds 5] [--kmer 4]

The last line printed is a JSON object with every number.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"

# (class, regular expression on the GenBank product), first match wins; everything else is "other".
CLASS_RULES = [
    ("rRNA", r"ribosomal RNA"),
    ("tRNA", r"^tRNA-"),
    ("ribosomal protein", r"ribosomal protein"),
    ("photosystem I", r"photosystem I\b(?!I)"),
    ("photosystem II", r"photosystem II"),
    ("cytochrome b6f", r"cytochrome (b6|f)"),
    ("ATP synthase", r"ATP synthase"),
    ("NADH dehydrogenase", r"NADH dehydrogenase"),
    ("RNA polymerase", r"RNA polymerase"),
]


def functional_class(product: str) -> str:
    for name, pattern in CLASS_RULES:
        if re.search(pattern, product):
            return name
    return "other"


def read_genbank_products(path: Path) -> dict[str, dict[str, str]]:
    """``locus_tag -> {"type", "gene", "product"}`` for the CDS, tRNA and rRNA features of a GenBank file.

    A minimal reader of the FEATURES table: keys start in column 6, qualifiers (``/name="value"``, values may
    continue over several lines) in column 22.
    """
    features: list[dict[str, str]] = []
    in_features = False
    current: dict[str, str] | None = None
    last_key = None
    for line in path.read_text().splitlines():
        if line.startswith("FEATURES"):
            in_features = True
            continue
        if not in_features:
            continue
        if line.startswith("ORIGIN") or (line and not line.startswith(" ")):
            break
        if line[5:6] != " ":  # a new feature key
            current = {"type": line[5:21].strip()}
            features.append(current)
            last_key = None
        elif line[21:22] == "/" and current is not None:
            key, _, value = line[22:].partition("=")
            current[key] = value.strip('"')
            last_key = key
        elif last_key is not None and current is not None:  # continuation of a qualifier value
            current[last_key] += " " + line.strip().strip('"')
    return {
        f["locus_tag"]: {"type": f["type"], "gene": f.get("gene", ""), "product": f.get("product", "")}
        for f in features
        if f["type"] in ("CDS", "tRNA", "rRNA") and "locus_tag" in f
    }


def chloroplast_genes(data: Path) -> pd.DataFrame:
    """One row per chloroplast gene: locus_tag, name, product, class, spliced sequence (transcript strand)."""
    from genolm.genome import GFF3, read_records, reverse_complement

    annotation = GFF3(data / "athaliana_chloroplast.gff3")
    genome = {seq_id: seq.upper() for seq_id, seq in read_records(data / "athaliana_chloroplast.fa")}
    products = read_genbank_products(data / "sources" / "NC_000932.gb")
    rows = []
    for tx in annotation.transcripts():
        if tx.trans_spliced:
            continue
        gene = annotation.by_id[tx.gene_id][0]
        locus_tag = gene.get("locus_tag")
        if locus_tag not in products:
            raise ValueError(f"{locus_tag}: no CDS/tRNA/rRNA feature in the GenBank record")
        seq = genome[tx.seqid]
        parts = tx.cds or tx.exons
        spliced = "".join(seq[s - 1 : e] for s, e in parts)
        if tx.strand == "-":
            spliced = reverse_complement(spliced)
        product = products[locus_tag]["product"]
        rows.append(
            dict(
                locus_tag=locus_tag,
                name=gene.get("Name"),
                product=product,
                label=functional_class(product),
                sequence=spliced,
            )
        )
    return pd.DataFrame(rows)


def kmer_frequencies(sequences: list[str], k: int) -> np.ndarray:
    """Overlapping k-mer frequencies, shape (n, 4**k) (k-mers with other letters are skipped)."""
    index = {"".join(p): i for i, p in enumerate(itertools.product("ACGT", repeat=k))}
    out = np.zeros((len(sequences), len(index)), dtype=np.float64)
    for row, seq in enumerate(sequences):
        counts = Counter(seq[i : i + k] for i in range(len(seq) - k + 1))
        for kmer, n in counts.items():
            if kmer in index:
                out[row, index[kmer]] = n
        out[row] /= max(1.0, out[row].sum())
    return out


def length_gc(sequences: list[str]) -> np.ndarray:
    return np.array([[np.log(len(s)), (s.count("G") + s.count("C")) / len(s)] for s in sequences])


def cross_validate(
    features: np.ndarray | None, labels: np.ndarray, groups: np.ndarray, folds: int, seed: int
):
    """Out-of-fold predictions of the linear probe (``features=None``: the training folds' majority class)."""
    predictions = np.empty(len(labels), dtype=object)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(np.zeros(len(labels)), labels, groups):
        if features is None:
            predictions[test] = Counter(labels[train]).most_common(1)[0][0]
            continue
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        probe.fit(features[train], labels[train])
        predictions[test] = probe.predict(features[test])
    return predictions


def scores(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": round(float(accuracy_score(labels, predictions)), 4),
        "balanced_accuracy": round(float(balanced_accuracy_score(labels, predictions)), 4),
        "macro_f1": round(float(f1_score(labels, predictions, average="macro", zero_division=0)), 4),
    }


def tiny_random_checkpoint(path: Path, seed: int) -> Path:
    import torch

    from genolm import GenoLMConfig, GenoLMForMaskedLM, GenoLMTokenizer

    torch.manual_seed(seed)
    GenoLMForMaskedLM(GenoLMConfig.from_preset("tiny")).save_pretrained(path)
    GenoLMTokenizer().save_pretrained(path)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--model", default=None, help="genolm checkpoint (default: tiny random-init model)")
    parser.add_argument("--layer", type=int, default=-1, help="hidden state to pool (default: final output)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--kmer", type=int, default=4, help="k of the k-mer frequency baseline (default: 4)")
    parser.add_argument("--min-class-size", type=int, default=4, help="smaller classes join 'other'")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import tempfile

    from genolm.embed import embed, load_encoder

    genes = chloroplast_genes(args.data)
    sizes = genes.label.value_counts()
    genes.loc[genes.label.isin(sizes[sizes < args.min_class_size].index), "label"] = "other"
    labels = genes.label.to_numpy(dtype=object)
    groups = genes.name.to_numpy(dtype=object)  # inverted-repeat copies share a name

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.model or tiny_random_checkpoint(Path(tmp) / "tiny", args.seed)
        model, tokenizer = load_encoder(checkpoint, device=None)
        start = time.perf_counter()
        vectors = embed(
            model,
            tokenizer,
            dict(zip(genes.locus_tag, genes.sequence)),
            pool="mean",
            layer=args.layer,
            batch_size=args.batch_size,
            progress=False,
        )
        embed_seconds = time.perf_counter() - start
    embeddings = np.stack([vectors[t] for t in genes.locus_tag])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small classes: sklearn warns about folds with few members
        results = {
            "embedding": scores(labels, cross_validate(embeddings, labels, groups, args.folds, args.seed)),
            f"kmer{args.kmer}": scores(
                labels,
                cross_validate(
                    kmer_frequencies(list(genes.sequence), args.kmer), labels, groups, args.folds, args.seed
                ),
            ),
            "length_gc": scores(
                labels, cross_validate(length_gc(list(genes.sequence)), labels, groups, args.folds, args.seed)
            ),
            "majority": scores(labels, cross_validate(None, labels, groups, args.folds, args.seed)),
        }
    kmer_f1 = results[f"kmer{args.kmer}"]["macro_f1"]
    summary = {
        "benchmark": "gene_function_probe",
        "model": str(args.model or f"tiny random-init (preset 'tiny', seed {args.seed})"),
        "random_init": args.model is None,
        "layer": args.layer,
        "n_genes": len(genes),
        "n_groups": len(set(groups)),
        "classes": {k: int(v) for k, v in genes.label.value_counts().items()},
        "folds": args.folds,
        "hidden_size": int(embeddings.shape[1]),
        "embed_seconds": round(embed_seconds, 2),
        **results,
        "macro_f1_ratio_embedding_vs_kmer": round(results["embedding"]["macro_f1"] / kmer_f1, 3)
        if kmer_f1
        else None,
    }
    width = max(len(k) for k in results)
    print(f"{len(genes)} genes, {len(set(groups))} name groups, {args.folds}-fold grouped stratified CV")
    print(f"{'features':<{width}}  accuracy  balanced_acc  macro_F1")
    for name, r in results.items():
        print(f"{name:<{width}}  {r['accuracy']:8.3f}  {r['balanced_accuracy']:12.3f}  {r['macro_f1']:8.3f}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
