"""In-silico mutagenesis (``genolm ism``): the zero-shot score of every single-base substitution in a region.

Each substitution is scored exactly as ``genolm vep`` scores an SNV (masked-marginal log-likelihood ratio, the
window centred on the token that holds the base; see :mod:`genolm.inference.vep`). One masked forward pass
gives the model's distribution over every token at the masked position, so all ``3 k`` substitutions inside a
k-mer token come from one forward: a region of ``L`` bases needs about ``L / k`` forward passes per strand
instead of ``3 L``. :func:`naive_ism_region` is the direct loop (mutate, re-tokenise, mask, score), kept for checking.

Coordinates: the Python API takes 0-based half-open regions; the ``--region`` option and the ``pos`` column of
the table are 1-based as in samtools and VCF (``pos = start + 1 + row``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import defaults
from ..errors import ConfigError
from ..genome import complement, is_base, parse_region, read_gff3
from ..outputs import atomic_file, check_outputs
from .distributed import (
    Workers,
    chunk_bounds,
    file_fingerprint,
    model_fingerprint,
    run_in_chunks,
    start_workers,
)
from .genome import Genome
from .scoring import KmerTable, encode_windows, load_model, masked_log_probs
from .vep import SNV, _check_window, naive_variant_score

__all__ = ["ISMResult", "ism_region", "naive_ism_region", "plot_ism", "run_ism"]

BASES = "ACGT"  # column order of ISMResult.scores


@dataclass
class ISMResult:
    """Scores of all substitutions in ``chrom[start:end]`` (0-based half-open).

    Attributes:
        scores: float64 (end - start, 4), columns A, C, G, T; NaN at the reference base and at positions whose
            reference is not A/C/G/T.
        ref: the region's reference bases, upper case.
    """

    chrom: str
    start: int
    end: int
    ref: str
    scores: np.ndarray

    def table(self):
        """Tidy ``pandas.DataFrame`` with one row per substitution: ``chrom``, ``pos`` (1-based), ``ref``,
        ``alt``, ``score``."""
        import pandas as pd

        rows, cols = np.nonzero(~np.isnan(self.scores))
        return pd.DataFrame(
            {
                "chrom": self.chrom,
                "pos": self.start + 1 + rows,
                "ref": np.array(list(self.ref))[rows] if len(rows) else np.array([], dtype=str),
                "alt": np.array(list(BASES))[cols],
                "score": self.scores[rows, cols],
            }
        )


def ism_region(
    model,
    tokenizer,
    genome: Genome,
    chrom: str,
    start: int,
    end: int,
    *,
    window_tokens: int | None = None,
    rc: bool = False,
    batch_size: int = 32,
    progress: bool = False,
) -> ISMResult:
    """Score every single-base substitution of ``chrom[start:end]`` (0-based half-open), one masked forward pass
    per token (per strand with ``rc``).

    Args:
        model, tokenizer: a loaded masked LM and its tokenizer (see ``load_model``).
        genome: the reference.
        chrom, start, end: the region.
        window_tokens: tokens per window, ``<cls>`` excluded (default: the model's maximum).
        rc: average with the reverse-complement strand.
        batch_size: windows per forward pass.
        progress: show a progress bar.
    """
    if chrom not in genome:
        raise ConfigError(f"{genome.path}: no sequence named {chrom!r}")
    if not 0 <= start < end <= genome.lengths[chrom]:
        raise ConfigError(
            f"region {chrom}:{start}-{end} (0-based) is empty or outside {chrom} ({genome.lengths[chrom]} bp)"
        )
    table = KmerTable(tokenizer)
    window_tokens = _check_window(model, window_tokens)
    device = next(model.parameters()).device
    ref = genome.fetch(chrom, start, end).upper()
    length = genome.lengths[chrom]
    strands = ("+", "-") if rc else ("+",)
    total = np.zeros((end - start, 4))
    for strand in strands:
        grid = genome.grid(chrom, table.k, strand)
        # The region on this strand's coordinates.
        lo, hi = (start, end) if strand == "+" else (length - end, length - start)
        tokens = np.arange(grid.token_of(lo), grid.token_of(hi - 1) + 1)
        # Tokens that are an N (or another non-base) have nothing to substitute: no forward pass for them.
        starts, ends = grid.token_span(tokens)
        span_seq = genome.fetch_strand(chrom, int(starts[0]), int(ends[-1]), strand).upper()
        tokens = [
            int(t)
            for t, a, b in zip(tokens, starts, ends)
            if all(is_base(c) for c in span_seq[a - starts[0] : b - starts[0]])
        ]
        scores = np.full((hi - lo, 4), np.nan)  # strand coordinates, columns A C G T of this strand
        bar = tqdm(total=len(tokens), desc=f"ISM {strand}", unit="tok", disable=not progress, leave=False)
        for begin in range(0, len(tokens), batch_size):
            batch_tokens = tokens[begin : begin + batch_size]
            windows = [grid.window(t, window_tokens) for t in batch_tokens]
            seqs = [genome.fetch_strand(chrom, w.start, w.end, strand).upper() for w in windows]
            ids = [tokenizer.encode_genome(seq) for seq in seqs]
            positions = torch.tensor(
                [t - w.first_token + 1 for t, w in zip(batch_tokens, windows)]
            )  # <cls> is 0
            log_probs = masked_log_probs(model, encode_windows(ids, table, device), positions, table.mask_id)
            log_probs = log_probs.cpu().numpy()
            for row, (token, window) in enumerate(zip(batch_tokens, windows)):
                t_start, t_end = grid.token_span(token)
                token_seq = seqs[row][t_start - window.start : t_end - window.start]
                variant_ids = table.all_substitutions(token_seq)  # (len, 4)
                ref_ids = variant_ids[np.arange(len(token_seq)), [BASES.index(b) for b in token_seq]]
                token_scores = log_probs[row][variant_ids] - log_probs[row][ref_ids][:, None]
                for offset in range(len(token_seq)):
                    p = t_start + offset
                    if lo <= p < hi:
                        scores[p - lo] = token_scores[offset]
                        scores[p - lo, BASES.index(token_seq[offset])] = np.nan
            bar.update(len(batch_tokens))
        bar.close()
        if strand == "-":
            # Back to forward coordinates and forward bases: reverse the rows, complement the columns.
            scores = scores[::-1][:, [BASES.index(complement(b)) for b in BASES]]
        total += scores
    return ISMResult(chrom, start, end, ref, total / len(strands))


def naive_ism_region(
    model,
    tokenizer,
    genome: Genome,
    chrom: str,
    start: int,
    end: int,
    *,
    window_tokens: int | None = None,
    rc: bool = False,
    progress: bool = False,
) -> ISMResult:
    """The direct loop: for every base and each of its 3 alternatives, mutate the window, re-tokenise, mask the
    token holding the base and score (:func:`genolm.inference.vep.naive_variant_score`): ``3 L`` forward passes
    per strand. Same windows and result as :func:`ism`."""
    ref = genome.fetch(chrom, start, end).upper()
    scores = np.full((end - start, 4), np.nan)
    bar = tqdm(total=end - start, desc="naive ISM", unit="bp", disable=not progress, leave=False)
    for row, base in enumerate(ref):
        if is_base(base):
            for col, alt in enumerate(BASES):
                if alt != base:
                    variant = SNV(chrom, start + row, base, alt)
                    scores[row, col] = naive_variant_score(
                        model, tokenizer, genome, variant, window_tokens=window_tokens, rc=rc
                    )
        bar.update(1)
    bar.close()
    return ISMResult(chrom, start, end, ref, scores)


def _overlapping_features(path: str | os.PathLike, chrom: str, start: int, end: int, types: tuple[str, ...]):
    """GFF3 features of ``types`` on ``chrom`` overlapping ``[start, end)`` (0-based): list of
    ``(type, start0, end0, strand, name)``. GFF3 is 1-based closed: ``start0 = start - 1``, ``end0 = end``."""
    return [
        (f.type, f.start - 1, f.end, f.strand, f.get("Name") or f.get("gene") or f.get("ID", f.type))
        for f in read_gff3(path)
        if f.seqid == chrom and f.type in types and f.end > start and f.start - 1 < end
    ]


def plot_ism(
    result: ISMResult,
    path: str | os.PathLike,
    gff3: str | os.PathLike | None = None,
    feature_types: tuple[str, ...] = (
        "gene",
        "mRNA",
        "exon",
        "CDS",
        "five_prime_UTR",
        "three_prime_UTR",
        "tRNA",
        "rRNA",
    ),
    title: str | None = None,
) -> None:
    """Heatmap of an ISM result (positions x bases A/C/G/T, blue = alternative less likely), reference bases
    marked, with the GFF3 features overlapping the region drawn underneath when ``gff3`` is given. ``title``
    replaces the default (the region)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    features = (
        _overlapping_features(gff3, result.chrom, result.start, result.end, feature_types) if gff3 else []
    )
    tracks = sorted({f[0] for f in features}, key=feature_types.index)
    width = min(40.0, max(6.0, (result.end - result.start) / 25))
    heights = [4, max(1, len(tracks))] if tracks else [4]
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(width, 2.2 + 0.4 * sum(heights)),
        sharex=True,
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    ax = axes[0, 0]
    finite = result.scores[np.isfinite(result.scores)]
    limit = float(np.abs(finite).max()) if finite.size else 1.0
    x0, x1 = result.start + 0.5, result.end + 0.5  # 1-based positions at cell centres
    image = ax.imshow(
        result.scores.T,
        aspect="auto",
        cmap="RdBu",
        vmin=-limit,
        vmax=limit,
        extent=(x0, x1, 3.5, -0.5),
        interpolation="nearest",
    )
    ref_rows = [BASES.index(b) if b in BASES else -1 for b in result.ref]
    xs = [result.start + 1 + i for i, r in enumerate(ref_rows) if r >= 0]
    ax.scatter(
        xs, [r for r in ref_rows if r >= 0], s=4, c="black", marker="s", linewidths=0, label="reference"
    )
    ax.set_yticks(range(4), list(BASES))
    ax.set_ylabel("alternative base")
    ax.set_title(title or f"ISM {result.chrom}:{result.start + 1:,}-{result.end:,} (log P(alt) - log P(ref))")
    fig.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.8, label="score")
    if tracks:
        fax = axes[1, 0]
        for feature_type, f_start, f_end, strand, name in features:
            row = tracks.index(feature_type)
            lo, hi = max(f_start, result.start) + 0.5, min(f_end, result.end) + 0.5
            fax.add_patch(
                Rectangle(
                    (lo, row - 0.35), hi - lo, 0.7, color="tab:green" if strand != "-" else "tab:purple"
                )
            )
            fax.text(
                (lo + hi) / 2, row, f"{name} ({strand})", ha="center", va="center", fontsize=7, clip_on=True
            )
        fax.set_ylim(len(tracks) - 0.5, -0.5)
        fax.set_yticks(range(len(tracks)), tracks)
    axes[-1, 0].set_xlim(x0, x1)
    axes[-1, 0].set_xlabel(f"{result.chrom} position (1-based)")
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def run_ism(
    model,
    fasta: str | os.PathLike | Genome,
    region: str,
    out: str | os.PathLike,
    *,
    tokenizer=None,
    plot: str | os.PathLike | None = None,
    gff3: str | os.PathLike | None = None,
    window_tokens: int | None = None,
    rc: bool = False,
    naive: bool = False,
    batch_size: int = defaults.ISM_BATCH_SIZE,
    device: str | None = defaults.DEVICE,
    dtype: str | None = defaults.DTYPE,
    compile: bool = defaults.COMPILE,
    chunk_bases: int = 6_000,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    workers: Workers | None = None,
) -> ISMResult | None:
    """``genolm ism``: score the region (``NAME:START-END``, 1-based closed), write the tidy table to ``out``
    (TSV; ``pos`` 1-based) and optionally the heatmap ``plot``. ``naive=True`` uses :func:`naive_ism_region`.

    The region is scored in blocks of ``chunk_bases`` bases, shared between the processes of a ``torchrun`` /
    ``accelerate launch`` job and kept for ``resume`` (see :mod:`genolm.inference.distributed`); the table is
    the same whatever the number of processes. Returns the result on the main process, ``None`` on the others.
    """
    started = time.perf_counter()
    out = Path(out)
    check_outputs(
        {"--out": out, "--plot": plot},
        {"--fasta": None if isinstance(fasta, Genome) else fasta, "--gff3": gff3,
         "--model": model if isinstance(model, (str, os.PathLike)) else None},
    )
    if gff3 is not None:
        read_gff3(gff3)  # a bad annotation is reported before the scoring, not after it
    workers = workers or start_workers(device)
    fingerprint = {
        "command": "ism",
        "fasta": file_fingerprint(fasta if not isinstance(fasta, Genome) else fasta.path),
        "model": model_fingerprint(model),
        "options": {"region": region, "window_tokens": window_tokens, "rc": rc, "naive": naive, "dtype": dtype,
                    "chunk_bases": chunk_bases},
    }
    model, tokenizer = load_model(model, tokenizer, "masked-lm", workers.device or device, dtype, compile)
    genome = fasta if isinstance(fasta, Genome) else Genome(fasta)
    chrom, start, end = parse_region(region, genome.lengths)
    compute = naive_ism_region if naive else ism_region
    kwargs = {} if naive else {"batch_size": batch_size}
    blocks = [(start + a, start + b) for a, b in chunk_bounds(end - start, chunk_bases)]

    def write_chunk(chunk: int, path: Path) -> None:
        block = compute(
            model, tokenizer, genome, chrom, *blocks[chunk], window_tokens=window_tokens, rc=rc,
            progress=progress and workers.world == 1 and len(blocks) == 1, **kwargs,
        )
        with open(path, "wb") as handle:
            np.save(handle, block.scores, allow_pickle=False)

    result = None

    def merge(parts: list[Path], path: Path) -> None:
        nonlocal result
        scores = np.concatenate([np.load(part, allow_pickle=False) for part in parts])
        result = ISMResult(chrom, start, end, genome.fetch(chrom, start, end).upper(), scores)
        with contextlib.ExitStack() as stack:  # the table and the plot appear together, or neither
            result.table().to_csv(path, sep="\t", index=False, float_format="%.7g")
            if plot:
                plot_ism(result, stack.enter_context(atomic_file(plot)), gff3)

    run_in_chunks(out, len(blocks), fingerprint, write_chunk, merge, resume=resume, overwrite=overwrite,
                  workers=workers, progress=progress and len(blocks) > 1)
    seconds = time.perf_counter() - started
    if progress and result is not None:
        n = int(np.isfinite(result.scores).sum())
        print(
            f"genolm ism: {n} substitutions over {end - start} bp in {seconds:.1f} s "
            f"({n / seconds:.1f} substitutions/s){' [naive loop]' if naive else ''}",
            file=sys.stderr,
        )
    return result
