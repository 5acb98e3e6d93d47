"""Promoter-wide in-silico mutagenesis (``genolm ism --feature gene``): every substitution of every promoter.

The promoter of a feature is taken around its 5' end on its own strand (the transcription start site when the
annotation has UTRs): ``upstream`` bases before it and ``downstream`` bases from it. For a ``+`` feature
starting at ``S`` (GFF3, 1-based) that is ``[S - upstream, S + downstream - 1]`` (1-based closed); for a ``-``
feature ending at ``E`` it is the mirror image ``[E - downstream + 1, E + upstream]``. Regions are clipped at
the sequence ends (the clipped bases are reported). Overlapping promoters (two genes head to head) are each
scored whole, so a base in both appears once per feature, by design.

Every substitution is scored by :func:`genolm.inference.ism.ism_region` on the forward strand (``ref``/``alt``
are forward-strand bases, as in ``genolm ism --region``); ``rel_pos`` is the position relative to the 5' end on
the feature's strand: 0 at the 5' end, negative upstream, positive downstream.

Outputs of ``--out PREFIX``: ``PREFIX.parquet`` (one row per substitution), ``PREFIX.summary.tsv`` (one row per
feature) and, with ``plot_top``, ``PREFIX.plots/`` (heatmaps of the features with the highest mean |score|).
The work is split into chunks of features run by :func:`genolm.inference.distributed.run_in_chunks`: sharded
over the processes of ``torchrun`` and resumable after a kill.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import defaults
from ..errors import ConfigError, InputDataError
from ..genome import read_gff3
from ..genome.gff3 import Feature

__all__ = [
    "PARQUET_COLUMNS",
    "Promoter",
    "PromoterISMReport",
    "SUMMARY_COLUMNS",
    "merge_promoter_parts",
    "promoter_outputs",
    "promoter_regions",
    "promoter_table",
    "read_ids_file",
    "run_promoter_ism",
    "select_features",
]

TOP_POSITIONS = 5  # most sensitive positions listed per feature in the summary
PARQUET_COLUMNS = ("feature_id", "chrom", "strand", "pos", "rel_pos", "ref", "alt", "score")
SUMMARY_COLUMNS = (
    "feature_id", "chrom", "start", "end", "strand", "tss", "clipped_upstream", "clipped_downstream",
    "n_substitutions", "mean_abs_score", "max_abs_score", "top_pos", "top_rel_pos", "heatmap",
)  # fmt: skip


@dataclass(frozen=True)
class SelectedFeature:
    """A feature picked from the GFF3: its lines sharing one ``ID`` joined (``start``/``end`` 1-based closed)."""

    id: str
    seqid: str
    strand: str
    start: int
    end: int
    line: int


@dataclass(frozen=True)
class Promoter:
    """The promoter region of one feature, 0-based half-open on the forward strand, after clipping.

    Attributes:
        tss: 0-based forward position of the feature's 5' end (its first base on its strand).
        clipped_upstream, clipped_downstream: bases of the requested region that lay past a sequence end.
        line: the feature's (first) GFF3 line.
    """

    feature_id: str
    chrom: str
    strand: str
    start: int
    end: int
    tss: int
    clipped_upstream: int
    clipped_downstream: int
    line: int

    def relative(self, pos: np.ndarray | int) -> np.ndarray | int:
        """Position(s) relative to the 5' end on the feature's strand, from 0-based forward position(s)."""
        return pos - self.tss if self.strand == "+" else self.tss - pos


def read_ids_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Feature ids of a text file, one per line (its first field; blank lines and ``#`` comments skipped), as
    ``(id, "FILE:LINE")``."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputDataError(f"--ids-file {path}: file not found") from None
    except UnicodeDecodeError:
        raise InputDataError(f"--ids-file {path}: not UTF-8 text") from None
    ids = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            ids.append((fields[0], f"{path}:{number}"))
    if not ids:
        raise InputDataError(f"--ids-file {path}: no ids (one per line expected)")
    return ids


def _feature_key(feature: Feature) -> str:
    return feature.id or feature.get("Name") or f"line{feature.line}"


def select_features(
    gff3: str | os.PathLike,
    feature_type: str,
    ids: Sequence[str | tuple[str, str]] | None = None,
) -> tuple[list[SelectedFeature], list[str]]:
    """The features of ``feature_type`` in ``gff3`` (file order), all or those whose ``ID`` or ``Name`` is in
    ``ids`` (plain ids, or ``(id, where)`` pairs whose ``where`` names the id's source in messages).

    Lines sharing an ``ID`` are one feature spanning them all. A feature without a strand (``.``/``?``), or
    whose lines lie on both strands or on several sequences (trans-splicing), has no 5' end: it is an error when
    named in ``ids`` and otherwise skipped.

    Returns:
        ``(features, notes)``: the selection and one note per skipped feature.

    Raises:
        InputDataError: no feature of that type (naming the types present), ids matching no feature of that
            type, a named feature without a 5' end.
    """
    path = Path(gff3)
    features = read_gff3(path)
    lines_by_key: dict[str, list[Feature]] = {}
    for feature in features:
        if feature.type == feature_type:
            lines_by_key.setdefault(_feature_key(feature), []).append(feature)
    if not lines_by_key:
        present = ", ".join(sorted({f.type for f in features})) or "none"
        raise InputDataError(f"{path}: no {feature_type!r} features (feature types present: {present})")

    wanted: dict[str, str] | None = None
    if ids is not None:
        if not ids:
            raise ConfigError("--ids: no feature ids given")
        wanted = {}
        for item in ids:
            name, where = item if isinstance(item, tuple) else (item, "--ids")
            wanted.setdefault(name, where)
        names = {}
        for key, lines in lines_by_key.items():
            names[key] = {key, *(f.get("Name") for f in lines if f.get("Name"))}
        known = set().union(*names.values())
        unknown = [(name, where) for name, where in wanted.items() if name not in known]
        if unknown:
            listed = ", ".join(f"{name!r} ({where})" for name, where in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            other = next((f for f in features if unknown[0][0] in (f.id, f.get("Name"))), None)
            hint = f"; {unknown[0][0]!r} names a {other.type} (line {other.line})" if other else ""
            raise InputDataError(f"{path}: no {feature_type} with ID or Name {listed}{more}{hint}")

    selected, notes = [], []
    for key, lines in lines_by_key.items():
        if wanted is not None and not any(name in wanted for name in (key, *(f.get("Name") for f in lines))):
            continue
        first = lines[0]
        strands = {f.strand for f in lines}
        seqids = {f.seqid for f in lines}
        problem = None
        if len(seqids) > 1:
            problem = f"lies on several sequences ({', '.join(sorted(seqids))})"
        elif len(strands) > 1:
            problem = "has lines on both strands (trans-spliced?)"
        elif first.strand not in ("+", "-"):
            problem = f"has no strand ({first.strand!r})"
        if problem:
            message = f"{path}:{first.line}: {feature_type} {key!r} {problem}, so it has no 5' end to take a promoter from"
            if wanted is not None:
                raise InputDataError(message)
            notes.append(message + "; skipped")
            continue
        selected.append(
            SelectedFeature(
                key,
                first.seqid,
                first.strand,
                min(f.start for f in lines),
                max(f.end for f in lines),
                first.line,
            )
        )
    return selected, notes


def promoter_regions(
    features: Sequence[SelectedFeature],
    lengths: dict[str, int],
    upstream: int,
    downstream: int,
    *,
    gff3: str | os.PathLike = "GFF3",
    fasta: str | os.PathLike = "FASTA",
) -> list[Promoter]:
    """The promoter of each feature (see the module docstring), clipped at the sequence ends.

    Raises:
        ConfigError: a negative ``upstream``/``downstream``, or both 0.
        InputDataError: a feature on a sequence the FASTA lacks, or extending past its end (naming the GFF3
            line).
    """
    if upstream < 0 or downstream < 0 or upstream + downstream == 0:
        raise ConfigError(
            f"--upstream {upstream} / --downstream {downstream}: both must be >= 0 and one of them > 0"
        )
    promoters = []
    for f in features:
        where = f"{gff3}:{f.line}: {f.id}"
        if f.seqid not in lengths:
            known = ", ".join(list(lengths)[:5]) + (", ..." if len(lengths) > 5 else "")
            raise InputDataError(
                f"{where} is on sequence {f.seqid!r}, which {fasta} does not have (it has {known})"
            )
        length = lengths[f.seqid]
        if f.end > length:
            raise InputDataError(
                f"{where} ends at {f.end}, past the end of {f.seqid} ({length} bp in {fasta})"
            )
        if f.strand == "+":
            tss = f.start - 1
            start, end = tss - upstream, tss + downstream
        else:
            tss = f.end - 1
            start, end = tss - downstream + 1, tss + upstream + 1
        left, right = max(0, -start), max(0, end - length)
        clipped_up, clipped_down = (left, right) if f.strand == "+" else (right, left)
        promoters.append(
            Promoter(
                f.id, f.seqid, f.strand, start + left, end - right, tss, clipped_up, clipped_down, f.line
            )
        )
    return promoters


def promoter_outputs(out: str | os.PathLike) -> tuple[Path, Path, Path]:
    """``(table, summary, plots)`` paths of ``--out PREFIX``: ``PREFIX.parquet``, ``PREFIX.summary.tsv`` and
    ``PREFIX.plots/``. A ``PREFIX`` ending in ``.parquet`` names the table itself."""
    out = Path(out)
    prefix = out.with_suffix("") if out.suffix == ".parquet" else out
    return (
        prefix.with_name(prefix.name + ".parquet"),
        prefix.with_name(prefix.name + ".summary.tsv"),
        prefix.with_name(prefix.name + ".plots"),
    )


def _table_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("feature_id", pa.string()),
            ("chrom", pa.string()),
            ("strand", pa.string()),
            ("pos", pa.int64()),
            ("rel_pos", pa.int64()),
            ("ref", pa.string()),
            ("alt", pa.string()),
            ("score", pa.float64()),
        ]
    )


def promoter_table(promoter: Promoter, result):
    """The rows of one promoter's :class:`~genolm.inference.ism.ISMResult` as a ``pyarrow.Table`` with
    :data:`PARQUET_COLUMNS` (``pos`` 1-based, forward strand, in the order of ``ISMResult.table``)."""
    import pyarrow as pa

    from .ism import BASES

    rows, cols = np.nonzero(~np.isnan(result.scores))
    n = len(rows)
    return pa.table(
        {
            "feature_id": [promoter.feature_id] * n,
            "chrom": [promoter.chrom] * n,
            "strand": [promoter.strand] * n,
            "pos": result.start + 1 + rows,
            "rel_pos": promoter.relative(result.start + rows),
            "ref": np.array(list(result.ref), dtype=object)[rows] if n else [],
            "alt": np.array(list(BASES), dtype=object)[cols],
            "score": result.scores[rows, cols],
        },
        schema=_table_schema(),
    )


def _summary_rows(table, promoters: Sequence[Promoter]) -> list[dict]:
    """One summary row per promoter from its rows of ``table`` (a ``pandas.DataFrame`` with
    :data:`PARQUET_COLUMNS`)."""
    groups = {key: group for key, group in table.groupby("feature_id", sort=False)}
    rows = []
    for p in promoters:
        group = groups.get(p.feature_id)
        n = 0 if group is None else len(group)
        row = {
            "feature_id": p.feature_id, "chrom": p.chrom, "start": p.start + 1, "end": p.end,
            "strand": p.strand, "tss": p.tss + 1, "clipped_upstream": p.clipped_upstream,
            "clipped_downstream": p.clipped_downstream, "n_substitutions": n,
            "mean_abs_score": float("nan"), "max_abs_score": float("nan"), "top_pos": "", "top_rel_pos": "",
            "heatmap": "",
        }  # fmt: skip
        if n:
            magnitude = group.score.abs()
            # A position's sensitivity is its largest |score| over its substitutions; ties keep position order.
            by_position = (
                group.assign(magnitude=magnitude)
                .groupby(["pos", "rel_pos"], sort=True)["magnitude"]
                .max()
                .reset_index()
                .sort_values("magnitude", ascending=False, kind="stable")
                .head(TOP_POSITIONS)
            )
            row.update(
                mean_abs_score=float(magnitude.mean()),
                max_abs_score=float(magnitude.max()),
                top_pos=",".join(str(v) for v in by_position.pos),
                top_rel_pos=",".join(str(v) for v in by_position.rel_pos),
            )
        rows.append(row)
    return rows


def _plot_name(rank: int, feature_id: str) -> str:
    return f"{rank:03d}-{re.sub(r'[^A-Za-z0-9._-]', '_', feature_id)}.png"


def _ism_result_of(rows, promoter: Promoter, genome):
    """Rebuild a promoter's :class:`~genolm.inference.ism.ISMResult` from its table rows (a DataFrame)."""
    from .ism import BASES, ISMResult

    scores = np.full((promoter.end - promoter.start, 4), np.nan)
    scores[rows.pos.to_numpy() - 1 - promoter.start, [BASES.index(a) for a in rows.alt]] = (
        rows.score.to_numpy()
    )
    ref = genome.fetch(promoter.chrom, promoter.start, promoter.end).upper()
    return ISMResult(promoter.chrom, promoter.start, promoter.end, ref, scores)


def merge_promoter_parts(
    parts: Sequence[Path],
    table_path: Path,
    chunks: Sequence[Sequence[Promoter]],
    summary_path: Path,
    *,
    plots: Path | None = None,
    plot_top: int = 0,
    genome=None,
    gff3: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> None:
    """Join the per-chunk Parquet ``parts`` (chunk order, one row group each) into ``table_path``; write the
    summary TSV and the heatmaps of the ``plot_top`` features with the highest mean |score| (each atomically,
    before the table, so a complete table means complete outputs). Reads one part at a time."""
    import pandas as pd
    import pyarrow.parquet as pq

    from ..outputs import atomic_file, atomic_folder
    from .ism import plot_ism

    summary, part_of = [], {}
    with pq.ParquetWriter(table_path, _table_schema()) as writer:
        for index, (part, promoters) in enumerate(zip(parts, chunks, strict=True)):
            table = pq.read_table(part, schema=_table_schema())
            writer.write_table(table)
            summary.extend(_summary_rows(table.to_pandas(), promoters))
            part_of.update({p.feature_id: index for p in promoters})
    summary = pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS))
    if plot_top > 0 and plots is not None:
        ranked = summary[summary.n_substitutions > 0].sort_values(
            "mean_abs_score", ascending=False, kind="stable"
        )
        by_id = {p.feature_id: p for promoters in chunks for p in promoters}
        with atomic_folder(plots, overwrite=overwrite) as folder:
            for rank, (index, feature_id) in enumerate(ranked.feature_id.head(plot_top).items(), start=1):
                p = by_id[feature_id]
                part = pq.read_table(parts[part_of[feature_id]], filters=[("feature_id", "==", feature_id)])
                name = _plot_name(rank, feature_id)
                title = (
                    f"{feature_id} ({p.strand}) promoter, {p.chrom}:{p.start + 1:,}-{p.end:,}, 5' end at "
                    f"{p.tss + 1:,}: log P(alt) - log P(ref)"
                )
                plot_ism(_ism_result_of(part.to_pandas(), p, genome), folder / name, gff3, title=title)
                summary.loc[index, "heatmap"] = name
    with atomic_file(summary_path) as tmp:
        summary.to_csv(tmp, sep="\t", index=False, float_format="%.7g")


@dataclass
class PromoterISMReport:
    """What :func:`run_promoter_ism` wrote: the paths, the promoters scored and the features skipped."""

    table: Path
    summary: Path
    plots: Path | None
    promoters: list[Promoter]
    notes: list[str]
    seconds: float


def run_promoter_ism(
    model,
    fasta: str | os.PathLike,
    gff3: str | os.PathLike,
    out: str | os.PathLike,
    *,
    feature: str = "gene",
    ids: Sequence[str] | None = None,
    ids_file: str | os.PathLike | None = None,
    upstream: int = 1000,
    downstream: int = 200,
    plot_top: int = 0,
    tokenizer=None,
    window_tokens: int | None = None,
    rc: bool = False,
    naive: bool = False,
    features_per_chunk: int = 16,
    resume: bool = False,
    overwrite: bool = False,
    batch_size: int = defaults.ISM_BATCH_SIZE,
    device: str | None = defaults.DEVICE,
    dtype: str | None = defaults.DTYPE,
    compile: bool = defaults.COMPILE,
    progress: bool = True,
) -> PromoterISMReport:
    """``genolm ism --feature TYPE``: score every substitution of the promoter of every selected feature.

    Args:
        model: masked-LM checkpoint folder (or a loaded model, with ``tokenizer``).
        fasta, gff3: the reference and its annotation.
        out: output prefix (see :func:`promoter_outputs`).
        feature: GFF3 type of the features (column 3), e.g. ``gene`` or ``mRNA``.
        ids, ids_file: keep only these features (``ID`` or ``Name``); default all of the type.
        upstream, downstream: bases before the 5' end, and from it, on the feature's strand.
        plot_top: heatmaps of this many features, highest mean |score| first.
        features_per_chunk: features per unit of work (a Parquet part; what ``resume`` skips when done).
        resume: continue a killed run into the same ``out`` (same inputs and settings).
        overwrite: replace an existing plots folder and leftovers of another run.
        window_tokens, rc, naive, batch_size, device, dtype, compile: as :func:`genolm.inference.ism.run_ism`.

    Raises:
        InputDataError, ConfigError, OutputPathError: bad annotation, ids, regions or outputs, reported before
            any scoring.
    """
    from ..outputs import check_outputs
    from .distributed import file_fingerprint, run_in_chunks, start_workers
    from .genome import Genome
    from .ism import ism_region, naive_ism_region
    from .scoring import load_model
    from .vep import model_fingerprint

    started = time.perf_counter()
    if features_per_chunk < 1:
        raise ConfigError(f"--chunk-features {features_per_chunk}: must be at least 1")
    if plot_top < 0:
        raise ConfigError(f"--plot-top {plot_top}: must be 0 (no heatmaps) or more")
    if ids is not None and ids_file is not None:
        raise ConfigError("--ids and --ids-file both select features: pass one")
    if resume and overwrite:
        raise ConfigError("--resume continues the run writing --out, --overwrite starts it over: pass one")
    table_path, summary_path, plots = promoter_outputs(out)
    model_path = model if isinstance(model, (str, os.PathLike)) else None
    check_outputs(
        {"--out table": table_path, "--out summary": summary_path},
        {"--fasta": fasta, "--gff3": gff3, "--ids-file": ids_file, "--model": model_path},
        folders={"--out plots": plots} if plot_top > 0 else {},
        overwrite=overwrite or resume,
    )
    wanted = read_ids_file(ids_file) if ids_file is not None else ids
    selected, notes = select_features(gff3, feature, wanted)
    genome = Genome(fasta)
    promoters = promoter_regions(selected, genome.lengths, upstream, downstream, gff3=gff3, fasta=fasta)
    if not promoters:
        raise InputDataError(
            f"{gff3}: no {feature} with a strand to take a promoter from ({len(notes)} skipped)"
        )
    for p in promoters:
        if p.clipped_upstream or p.clipped_downstream:
            notes.append(
                f"{p.feature_id}: promoter clipped at an end of {p.chrom} ({p.clipped_upstream} upstream, "
                f"{p.clipped_downstream} downstream bases lost)"
            )

    workers = start_workers(device)
    if progress and workers.is_main:
        for note in notes:
            print(f"genolm ism: {note}", file=sys.stderr)
    model_id = model_fingerprint(model)
    model, tokenizer = load_model(model, tokenizer, "masked-lm", workers.device, dtype, compile)
    compute = naive_ism_region if naive else ism_region
    kwargs = {} if naive else {"batch_size": batch_size}
    chunks = [promoters[i : i + features_per_chunk] for i in range(0, len(promoters), features_per_chunk)]

    def write_chunk(index: int, part: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [
            promoter_table(
                p,
                compute(
                    model,
                    tokenizer,
                    genome,
                    p.chrom,
                    p.start,
                    p.end,
                    window_tokens=window_tokens,
                    rc=rc,
                    **kwargs,
                ),
            )
            for p in chunks[index]
        ]
        pq.write_table(pa.concat_tables(tables), part)

    def merge(parts: list[Path], tmp_table: Path) -> None:
        merge_promoter_parts(
            parts, tmp_table, chunks, summary_path, plots=plots, plot_top=plot_top, genome=genome, gff3=gff3,
            overwrite=overwrite or resume,
        )  # fmt: skip

    fingerprint = {
        "command": "ism --feature",
        "fasta": file_fingerprint(fasta),
        "gff3": file_fingerprint(gff3),
        "model": model_id,
        "promoters": hashlib.sha256(
            json.dumps([[p.feature_id, p.chrom, p.start, p.end, p.strand] for p in promoters]).encode()
        ).hexdigest(),
        "features_per_chunk": features_per_chunk,
        "window_tokens": window_tokens,
        "rc": rc,
        "naive": naive,
        "dtype": str(next(model.parameters()).dtype),
    }
    run_in_chunks(
        table_path,
        len(chunks),
        fingerprint,
        write_chunk,
        merge,
        resume=resume,
        overwrite=overwrite,
        workers=workers,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    if progress and workers.is_main:
        bases = sum(p.end - p.start for p in promoters)
        print(
            f"genolm ism: {len(promoters)} promoters ({bases} bp) scored in {seconds:.1f} s -> {table_path}, "
            f"{summary_path}{f', {plots}' if plot_top > 0 else ''}",
            file=sys.stderr,
        )
    return PromoterISMReport(
        table_path, summary_path, plots if plot_top > 0 else None, promoters, notes, seconds
    )
