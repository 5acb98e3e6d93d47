"""Does fine-tuning a small genolm model beat a k-mer-count logistic regression on a real annotation task?

    python benchmarks/finetune_vs_kmer.py                      # splice sites of the A. thaliana Chr5 excerpt
    python benchmarks/finetune_vs_kmer.py --pretrain-steps 0   # fine-tune from random weights only

1. Task: ``genolm data make-task --task splice_sites`` on ``../shared/data/athaliana_chr5_tail.{fa.gz,gff3}``:
   400 bp windows centred on annotated donor / acceptor sites and on GT / AG decoys inside transcripts
   (3 classes: none, donor, acceptor). The excerpt annotates 11 genes; 7 have introns.
2. Evaluation: grouped cross-validation over genes (``--folds``; every window of a gene in one fold). In each
   fold the held-out genes are the test set and one training gene group is the validation set (early
   stopping, choice of k and C for the baseline). Out-of-fold test predictions are pooled and scored once.
   ``--folds 0`` uses the builder's own train / validation / test split instead (one held-out gene).
3. Baseline: counts of overlapping k-mers (frequencies, standardised) -> multinomial logistic regression
   (scikit-learn), k in 2..6 and C chosen on the validation set.
4. Fine-tuning: ``recipes/finetune.py`` with the ``tiny`` preset, (a) from random weights and (b) from a
   checkpoint of ``recipes/pretrain.py`` trained for ``--pretrain-steps`` on rice Chr2 (1 Mb) and the
   A. thaliana chloroplast, which share no sequence with the Chr5 task.

The primary metric is the multi-class MCC. The last line printed is a JSON object with every score, a paired
bootstrap interval (over test windows; windows of one gene are correlated, so it is too narrow) for the MCC
difference between the better fine-tuned model and the baseline, and a verdict: ``beats_kmer_baseline`` is
true only when that interval lies above 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CLASS_NAMES = ["none", "donor", "acceptor"]
KMER_SIZES = (2, 3, 4, 5, 6)
C_GRID = (0.01, 0.1, 1.0, 10.0)


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the k-mer baseline -----------------------------------------------------------------------------------
def kmer_frequencies(sequences: list[str], k: int) -> np.ndarray:
    """(n, 4**k) frequencies of overlapping k-mers (windows with a non-ACGT base are skipped)."""
    code = np.full(256, 4, dtype=np.int64)
    for i, base in enumerate("ACGT"):
        code[ord(base)] = i
    out = np.zeros((len(sequences), 4**k), dtype=np.float64)
    for row, seq in enumerate(sequences):
        digits = code[np.frombuffer(seq.upper().encode("ascii"), dtype=np.uint8)]
        if len(digits) < k:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(digits, k)
        windows = windows[(windows < 4).all(1)]
        index = windows @ (4 ** np.arange(k - 1, -1, -1))
        counts = np.bincount(index, minlength=4**k)
        out[row] = counts / max(counts.sum(), 1)
    return out


def kmer_baseline(
    train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame
) -> tuple[np.ndarray, dict]:
    """Test-set class probabilities of the k-mer logistic regression whose (k, C) is best on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from genolm.finetune.metrics import classification_metrics

    best = None
    for k in KMER_SIZES:
        x_train, x_val = (
            kmer_frequencies(list(train.sequence), k),
            kmer_frequencies(list(validation.sequence), k),
        )
        for c in C_GRID:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
            model.fit(x_train, train.label)
            prob = _all_classes(model, model.predict_proba(x_val))
            mcc = classification_metrics(validation.label.to_numpy(), prob)["mcc"]
            if best is None or mcc > best[0]:
                best = (mcc, k, c, model)
    _, k, c, model = best
    prob = _all_classes(model, model.predict_proba(kmer_frequencies(list(test.sequence), k)))
    return prob, {"k": k, "C": c, "validation_mcc": best[0]}


def _all_classes(model, prob: np.ndarray) -> np.ndarray:
    """Probabilities over all classes (a class absent from a training fold gets 0)."""
    full = np.zeros((len(prob), len(CLASS_NAMES)))
    full[:, model.classes_] = prob
    return full


# --- folds ------------------------------------------------------------------------------------------------
def make_folds(table: pd.DataFrame, n_folds: int, seed: int) -> list[dict[str, pd.DataFrame]]:
    """Grouped folds over genes: fold i tests gene group i, validates on group i + 1 and trains on the rest.

    Genes go to groups largest first, each to the group with the fewest windows so far (ties in a seeded random
    order), so the groups are balanced in windows.
    """
    if n_folds == 0:
        return [
            {
                split: table[table.split == split].reset_index(drop=True)
                for split in ("train", "validation", "test")
            }
        ]
    sizes = table.gene.value_counts()
    order = np.random.default_rng(seed).permutation(len(sizes))
    genes = sorted(zip(sizes.to_numpy()[order], sizes.index[order]), key=lambda item: -item[0])
    groups: list[set[str]] = [set() for _ in range(n_folds)]
    load = np.zeros(n_folds)
    for size, gene in genes:
        target = int(np.argmin(load))
        groups[target].add(gene)
        load[target] += size
    folds = []
    for i in range(n_folds):
        test_genes, val_genes = groups[i], groups[(i + 1) % n_folds]
        folds.append(
            {
                "train": table[~table.gene.isin(test_genes | val_genes)].reset_index(drop=True),
                "validation": table[table.gene.isin(val_genes)].reset_index(drop=True),
                "test": table[table.gene.isin(test_genes)].reset_index(drop=True),
            }
        )
    return folds


# --- main -------------------------------------------------------------------------------------------------
def pretrain(out: Path, steps: int, seed: int) -> Path:
    """A tiny masked LM pretrained on rice Chr2 and the chloroplast (no Chr5 sequence); its checkpoint path."""
    from genolm.training import latest_checkpoint

    sources = f"[{DATA / 'rice_chr2_1mb.fa.gz'}, {DATA / 'athaliana_chloroplast.fa'}]"
    command = [
        sys.executable, str(REPO / "recipes" / "pretrain.py"), "--model", "tiny", "--sources", sources,
        "--max_tokens", "66", "--batch_size", "16", "--max_steps", str(steps), "--lr", "1e-3", "--init_lr", "1e-4",
        "--warmup_steps", str(max(1, steps // 10)), "--decay", "sqrt", "--eval_every", "0", "--eval_batches", "4",
        "--checkpoint_every", str(steps), "--keep_checkpoints", "1", "--log_every", str(max(1, steps // 10)),
        "--data_options", "{block_size: 5000, validation_fraction: 0.05, shuffle: true, reverse_complement: 0.5}",
        "--output_dir", str(out), "--seed", str(seed), "--report_to", "none", "--fill_mask_example", "false",
        "--progress_bar", "false", "--mixed_precision", "no",
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=REPO)
    checkpoint = latest_checkpoint(out / "checkpoints")
    if checkpoint is None:
        raise RuntimeError(f"pretraining wrote no checkpoint in {out / 'checkpoints'}")
    return checkpoint


def finetune_fold(
    recipe, model: str, fold_dir: Path, out: Path, args: argparse.Namespace, seed: int
) -> np.ndarray:
    """Fine-tune on one fold; test-set class probabilities in the test file's row order."""
    metrics = recipe.main(
        [
            "--model", model, "--task", "classification", "--class_names", ",".join(CLASS_NAMES),
            "--train", str(fold_dir / "train.parquet"), "--validation", str(fold_dir / "validation.parquet"),
            "--test", str(fold_dir / "test.parquet"), "--output_dir", str(out), "--seed", str(seed),
            "--max_steps", str(args.steps), "--eval_every", str(args.eval_every), "--patience", str(args.patience),
            "--batch_size", "16", "--lr", str(args.lr), "--warmup_steps", str(args.steps // 10),
            "--pooling", args.pooling, "--log_every", str(args.eval_every), "--mixed_precision", "no",
        ]
    )  # fmt: skip
    table = pd.read_parquet(out / "predictions_test.parquet")
    print(f"    best step {metrics['best_step']}, test MCC {metrics['test']['mcc']:.3f}")
    return table[[f"prob_{c}" for c in range(len(CLASS_NAMES))]].to_numpy()


def paired_bootstrap(
    y: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray, n: int = 2000, seed: int = 0
) -> list[float]:
    """95 % interval of MCC(a) - MCC(b) resampling test windows."""
    from genolm.finetune.metrics import classification_metrics

    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        deltas.append(
            classification_metrics(y[idx], prob_a[idx])["mcc"]
            - classification_metrics(y[idx], prob_b[idx])["mcc"]
        )
    return [float(np.percentile(deltas, 2.5)), float(np.percentile(deltas, 97.5))]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", default="runs/bench-finetune-vs-kmer", help="work folder")
    parser.add_argument(
        "--folds", type=int, default=5, help="grouped CV folds over genes (0: the builder's split)"
    )
    parser.add_argument("--negatives-per-positive", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps (upper bound)")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--pooling", default="mean", choices=["cls", "mean"])
    parser.add_argument("--pretrain-steps", type=int, default=1000, help="0: no pretrained model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.folds in (1, 2):
        parser.error(
            "--folds must be 0 (the builder's split) or at least 3 (test, validation and training genes)"
        )
    out = Path(args.out)
    started = time.perf_counter()

    from genolm.data.tasks import make_task
    from genolm.finetune.metrics import classification_metrics

    info = make_task(
        DATA / "athaliana_chr5_tail.fa.gz", DATA / "athaliana_chr5_tail.gff3", "splice_sites", out / "task",
        negatives_per_positive=args.negatives_per_positive, seed=args.seed,
    )  # fmt: skip
    assert info["label_names"] == CLASS_NAMES, info["label_names"]
    table = pd.concat(
        [
            pd.read_parquet(out / "task" / info["files"][s]).assign(split=s)
            for s in ("train", "validation", "test")
        ],
        ignore_index=True,
    )
    folds = make_folds(table, args.folds, args.seed)
    print(f"task: {len(table)} windows of {table.gene.nunique()} genes, {len(folds)} fold(s)")

    recipe = load_recipe("finetune")
    models = {"finetune_scratch": "preset:tiny"}
    if args.pretrain_steps > 0:
        print(f"pretraining the tiny preset for {args.pretrain_steps} steps on rice Chr2 + chloroplast")
        models["finetune_pretrained"] = str(pretrain(out / "pretrain", args.pretrain_steps, args.seed))

    y_all, probs = [], {"kmer_lr": [], **{name: [] for name in models}}
    baseline_choices = []
    for i, fold in enumerate(folds):
        fold_dir = out / f"fold{i}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        for split, part in fold.items():
            part.drop(columns="split").to_parquet(fold_dir / f"{split}.parquet", index=False)
        print(
            f"fold {i}: train {len(fold['train'])}, validation {len(fold['validation'])}, test {len(fold['test'])}"
        )
        y_all.append(fold["test"].label.to_numpy())
        prob, choice = kmer_baseline(fold["train"], fold["validation"], fold["test"])
        probs["kmer_lr"].append(prob)
        baseline_choices.append(choice)
        print(
            f"    k-mer LR: k={choice['k']}, C={choice['C']}, test MCC {classification_metrics(y_all[-1], prob)['mcc']:.3f}"
        )
        for name, model in models.items():
            print(f"  {name}:")
            probs[name].append(finetune_fold(recipe, model, fold_dir, fold_dir / name, args, args.seed))

    y = np.concatenate(y_all)
    pooled = {name: np.concatenate(parts) for name, parts in probs.items()}
    scores = {name: classification_metrics(y, prob) for name, prob in pooled.items()}
    best_finetune = max(models, key=lambda name: scores[name]["mcc"])
    delta = scores[best_finetune]["mcc"] - scores["kmer_lr"]["mcc"]
    interval = paired_bootstrap(y, pooled[best_finetune], pooled["kmer_lr"])
    if interval[0] > 0:
        verdict = "fine-tuning beats the k-mer baseline (95% interval of the MCC gain above 0)"
    elif delta > 0:
        verdict = "fine-tuning scores higher, but the 95% interval includes 0: no clear win at this scale"
    else:
        verdict = "fine-tuning does not beat the k-mer baseline at this scale"
    result = {
        "benchmark": "finetune_vs_kmer",
        "task": "splice_sites (none/donor/acceptor), A. thaliana Chr5 excerpt",
        "windows": int(len(table)),
        "genes": int(table.gene.nunique()),
        "folds": args.folds,
        "test_windows_scored": int(len(y)),
        "metric": "mcc",
        **{name: {k: round(v, 4) for k, v in s.items() if k in ("mcc", "accuracy", "f1_macro", "auroc")} for name, s in scores.items()},
        "kmer_lr_choices": baseline_choices,
        "pretrain_steps": args.pretrain_steps,
        "finetune_steps_max": args.steps,
        "best_finetune": best_finetune,
        "mcc_delta_best_finetune_minus_kmer": round(delta, 4),
        "mcc_delta_ci95_row_bootstrap": [round(v, 4) for v in interval],
        "beats_kmer_baseline": bool(interval[0] > 0),
        "verdict": verdict,
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
