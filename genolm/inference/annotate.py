"""Whole-genome annotation (``genolm annotate``): slide a token-classification model along every sequence.

**Windows.** Each sequence is tokenised from its first base (NT's rule, see :mod:`genolm.inference.genome`)
and cut into windows of ``window_tokens`` tokens every ``stride_tokens`` tokens (default: half a window); the
last window is shifted to end at the last token. A window is a run of whole tokens, so it is tokenised alone
exactly as in the whole sequence.

**Stitching.** Each base takes its prediction from the window whose centre (in bases) is nearest to it, ties
going to the earlier window: consecutive windows hand over at the midpoint between their centres, so every
base is predicted with at least ``(window_tokens - stride_tokens) / 2`` tokens of context on each side (less
only at sequence ends).

**Per-base predictions.** A model with ``config.per_nucleotide`` predicts each of the ``k`` bases of a token
(a single-nucleotide token uses its first prediction); otherwise a token's prediction applies to all its
bases. Probabilities are a softmax over the labels, or one sigmoid per label when
``config.problem_type == "multi_label_classification"``.

**Intervals.** A base is called for a label when that label has the highest probability (single-label) or a
probability of at least ``threshold`` (multi-label). Maximal runs of called bases become intervals, scored by
their mean probability. GFF3 output is 1-based closed (``start = bed_start + 1``, ``end = bed_end``); BED is
0-based half-open with the score scaled to 0-1000.

**Streaming.** Sequences are read one at a time in chunks, windows are batched as they come and finished
bases are written at once, so memory holds a few windows, not a chromosome.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import defaults
from ..errors import ConfigError, InputDataError, OutputPathError
from ..genome import iter_records, sequence_lengths
from ..outputs import atomic_file, check_outputs
from .distributed import Workers, file_fingerprint, model_fingerprint, run_in_chunks, start_workers
from .genome import IS_BASE_BYTE
from .scoring import KmerTable, encode_windows, load_model, max_window_tokens

__all__ = [
    "AnnotateReport",
    "annotate_fasta",
    "naive_predict_bases",
    "predict_bases",
    "run_annotate",
    "stitch_cuts",
]


@dataclass
class _Window:
    first: int  # grid token index
    ids: np.ndarray  # (n,) token ids
    lengths: np.ndarray  # (n,) bases per token
    start: int  # bases, 0-based half-open
    end: int


def _stream_tokens(
    chunks: Iterable[str], tokenizer, table: KmerTable
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Tokenise a sequence given in chunks, exactly as ``encode_genome`` on the whole: yields ``(ids, lengths)``
    blocks. Each block ends where tokenisation restarts identically (after a non-base, or a multiple of ``k``
    bases into a run), so the few bases after it are carried into the next block."""
    k = table.k
    carry = ""
    for chunk in chunks:
        buffer = carry + chunk
        data = np.frombuffer(buffer.encode("ascii", errors="replace"), dtype=np.uint8)
        nonbase = np.flatnonzero(~IS_BASE_BYTE[data])
        run_start = int(nonbase[-1]) + 1 if nonbase.size else 0
        cut = run_start + ((len(buffer) - run_start) // k) * k
        if cut:
            ids = tokenizer.encode_genome(buffer[:cut])
            yield ids, table.lengths[ids]
        carry = buffer[cut:]
    if carry:
        ids = tokenizer.encode_genome(carry)
        yield ids, table.lengths[ids]


def _iter_windows(
    token_blocks: Iterable[tuple[np.ndarray, np.ndarray]], window_tokens: int, stride_tokens: int
) -> Iterator[_Window]:
    """Windows of ``window_tokens`` tokens every ``stride_tokens`` tokens over a token stream, the last one
    shifted to end at the last token (same windows as ``TokenGrid.tiling``). Keeps at most about one window of
    tokens in memory beyond the current block."""
    ids_buf = np.zeros(0, dtype=np.int64)
    len_buf = np.zeros(0, dtype=np.int64)
    buf_first, buf_base = 0, 0  # token index and base position of ids_buf[0]
    next_first, covered = 0, 0  # next window's first token; tokens covered by the windows so far

    def make(first: int, last: int) -> _Window:
        a, b = first - buf_first, last - buf_first
        start = buf_base + int(len_buf[:a].sum())
        return _Window(first, ids_buf[a:b], len_buf[a:b], start, start + int(len_buf[a:b].sum()))

    for ids, lengths in token_blocks:
        ids_buf = np.concatenate((ids_buf, ids))
        len_buf = np.concatenate((len_buf, lengths))
        while buf_first + len(ids_buf) >= next_first + window_tokens:
            yield make(next_first, next_first + window_tokens)
            covered = next_first + window_tokens
            next_first += stride_tokens
            # Keep the tokens a later window may need: from the next window, or the last window_tokens.
            keep_from = min(next_first, buf_first + len(ids_buf) - window_tokens)
            drop = keep_from - buf_first
            if drop > 0:
                buf_base += int(len_buf[:drop].sum())
                ids_buf, len_buf, buf_first = ids_buf[drop:], len_buf[drop:], keep_from
    n_tokens = buf_first + len(ids_buf)
    if covered < n_tokens:
        yield make(max(0, n_tokens - window_tokens), n_tokens)


def stitch_cuts(spans: list[tuple[int, int]]) -> list[int]:
    """Hand-over points between consecutive windows ``(start, end)`` (bases, sorted): base ``x`` goes to window
    ``i`` rather than ``i + 1`` when ``|x + 0.5 - centre_i| <= |x + 0.5 - centre_{i+1}|``, i.e. ``x < cut_i``
    with ``cut_i = floor((s_i + e_i + s_{i+1} + e_{i+1} - 2) / 4) + 1``, kept inside the windows' overlap."""
    cuts = []
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        cut = (s0 + e0 + s1 + e1 - 2) // 4 + 1
        cuts.append(min(max(cut, s1), e0))
    return cuts


def _probabilities(model, logits: torch.Tensor) -> torch.Tensor:
    if getattr(model.config, "problem_type", None) == "multi_label_classification":
        return torch.sigmoid(logits.float())
    return torch.softmax(logits.float(), dim=-1)


def _base_probs(window: _Window, token_probs: np.ndarray, per_nucleotide: bool) -> np.ndarray:
    """(tokens, k, labels) or (tokens, labels) -> per-base (bases, labels) over ``[window.start, window.end)``."""
    if per_nucleotide:
        k = token_probs.shape[1]
        used = (
            np.arange(k)[None, :] < window.lengths[:, None]
        )  # the first len(token) predictions of each token
        return token_probs[used]
    return np.repeat(token_probs, window.lengths, axis=0)


@torch.inference_mode()
def predict_bases(
    model,
    tokenizer,
    chunks: Iterable[str],
    *,
    window_tokens: int | None = None,
    stride_tokens: int | None = None,
    batch_size: int = 8,
    progress_bar=None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Per-base label probabilities of one sequence, streamed.

    Args:
        model: a loaded token-classification model (``GenoLMForTokenClassification``).
        tokenizer: its ``GenoLMTokenizer``.
        chunks: the sequence in consecutive pieces (e.g. from :func:`genolm.genome.iter_records`, decoded).
        window_tokens: tokens per window, ``<cls>`` excluded (default: the model's maximum).
        stride_tokens: tokens between window starts (default ``window_tokens // 2``).
        batch_size: windows per forward pass.
        progress_bar: a ``tqdm`` bar to advance by the bases finished.

    Yields:
        ``(start, probs)``: consecutive blocks covering the sequence in order; ``probs`` is float32
        (bases, num_labels) for bases ``[start, start + len(probs))``, 0-based.
    """
    table = KmerTable(tokenizer)
    window_tokens, stride_tokens = _check_tiling(model, window_tokens, stride_tokens)
    device = next(model.parameters()).device
    per_nucleotide = bool(getattr(model.config, "per_nucleotide", False))
    windows = _iter_windows(_stream_tokens(chunks, tokenizer, table), window_tokens, stride_tokens)

    pending: list[tuple[_Window, np.ndarray]] = []  # predicted windows whose successor is not known yet
    emitted = 0  # bases written so far

    def flush(batch: list[_Window], final: bool) -> Iterator[tuple[int, np.ndarray]]:
        nonlocal emitted
        if batch:
            encoded = encode_windows([w.ids for w in batch], table, device)
            logits = model(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask).logits
            probs = _probabilities(model, logits).cpu().numpy()
            for row, window in enumerate(batch):
                pending.append(
                    (window, _base_probs(window, probs[row, 1 : len(window.ids) + 1], per_nucleotide))
                )
        cuts = stitch_cuts([(w.start, w.end) for w, _ in pending])
        ready = len(pending) if final else len(pending) - 1
        for i in range(ready):
            window, base_probs = pending[i]
            stop = cuts[i] if i < len(cuts) else window.end
            if stop > emitted:
                yield emitted, base_probs[emitted - window.start : stop - window.start]
                if progress_bar is not None:
                    progress_bar.update(stop - emitted)
                emitted = stop
        del pending[:ready]

    batch: list[_Window] = []
    for window in windows:
        batch.append(window)
        if len(batch) == batch_size:
            yield from flush(batch, final=False)
            batch = []
    yield from flush(batch, final=True)


def _check_tiling(model, window_tokens: int | None, stride_tokens: int | None) -> tuple[int, int]:
    limit = max_window_tokens(model)
    window_tokens = limit if window_tokens is None else int(window_tokens)
    if not 1 <= window_tokens <= limit:
        raise ConfigError(
            f"window_tokens={window_tokens}: the model takes 1 to {limit} tokens (<cls> excluded)"
        )
    stride_tokens = max(1, window_tokens // 2) if stride_tokens is None else int(stride_tokens)
    if not 1 <= stride_tokens <= window_tokens:
        raise ConfigError(
            f"stride_tokens={stride_tokens}: need 1 <= stride <= window_tokens ({window_tokens})"
        )
    return window_tokens, stride_tokens


@torch.inference_mode()
def naive_predict_bases(
    model, tokenizer, seq: str, *, window_tokens: int | None = None, stride_tokens: int | None = None
) -> np.ndarray:
    """Reference for :func:`predict_bases` on a whole in-memory sequence: every window of
    ``TokenGrid.tiling`` runs alone through the tokenizer's ``__call__`` and the model, and each base takes the
    prediction of the containing window whose centre is nearest (ties: the earlier window). Returns float32
    (len(seq), num_labels)."""
    from .genome import TokenGrid

    window_tokens, stride_tokens = _check_tiling(model, window_tokens, stride_tokens)
    device = next(model.parameters()).device
    per_nucleotide = bool(getattr(model.config, "per_nucleotide", False))
    grid = TokenGrid.from_sequence(seq, tokenizer.k)
    best = np.full(len(seq), np.inf)
    out = np.zeros((len(seq), model.config.num_labels), dtype=np.float32)
    for window in grid.tiling(window_tokens, stride_tokens):
        encoded = tokenizer(seq[window.start : window.end], return_tensors="pt")
        logits = model(input_ids=encoded["input_ids"].to(device)).logits[0, 1:]
        probs = _probabilities(model, logits).cpu().numpy()
        t_start = window.start  # walk the token strings: a k-mer covers k bases, N or <unk> one
        for j, token in enumerate(tokenizer.convert_ids_to_tokens(encoded["input_ids"][0, 1:].tolist())):
            t_end = t_start + (1 if token.startswith("<") else len(token))
            for x in range(t_start, t_end):
                distance = abs(x + 0.5 - (window.start + window.end) / 2)
                if distance < best[x]:
                    best[x] = distance
                    out[x] = probs[j, x - t_start] if per_nucleotide else probs[j]
            t_start = t_end
    return out


# ----------------------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------------------
class _IntervalCaller:
    """Turns streamed per-base probabilities into intervals per label, across block boundaries."""

    def __init__(self, labels: list[str], multi_label: bool, threshold: float, skip: set[str]):
        self.labels = labels
        self.multi_label = multi_label
        self.threshold = threshold
        self.active = [i for i, name in enumerate(labels) if name not in skip]
        self.open: dict[int, list] = {}  # label -> [start, sum of probabilities]

    def add(self, start: int, probs: np.ndarray) -> Iterator[tuple[int, int, int, float]]:
        """Intervals ``(label, start, end, mean probability)`` closed by this block (0-based half-open), sorted
        by start. A run reaching the block's end stays open until a later block ends it."""
        if self.multi_label:
            called = probs >= self.threshold
        else:
            called = np.zeros(probs.shape, dtype=bool)
            called[np.arange(len(probs)), probs.argmax(axis=1)] = True
        closed = []
        for c in self.active:
            edges = np.diff(np.concatenate(([0], called[:, c].view(np.int8), [0])))
            starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
            cumulative = np.concatenate(([0.0], np.cumsum(probs[:, c], dtype=np.float64)))
            open_run = self.open.pop(c, None)
            for s, e, total in zip(
                starts.tolist(), ends.tolist(), (cumulative[ends] - cumulative[starts]).tolist()
            ):
                s_abs = start + s
                if open_run is not None:
                    if s == 0:  # continues the run left open at the end of the previous block
                        s_abs, total = open_run[0], open_run[1] + total
                    else:
                        closed.append(self._close(c, open_run))
                    open_run = None
                if e == len(probs):
                    self.open[c] = [s_abs, total, start + e]
                else:
                    closed.append((c, s_abs, start + e, total / (start + e - s_abs)))
            if open_run is not None:
                closed.append(self._close(c, open_run))
        yield from sorted(closed, key=lambda interval: (interval[1], interval[0]))

    @staticmethod
    def _close(c: int, run: list) -> tuple[int, int, int, float]:
        s, total, e = run
        return c, s, e, total / (e - s)

    def finish(self) -> Iterator[tuple[int, int, int, float]]:
        """Close the runs still open at the end of the sequence."""
        closed = [self._close(c, self.open.pop(c)) for c in sorted(self.open)]
        yield from sorted(closed, key=lambda interval: (interval[1], interval[0]))


class _TrackWriter:
    """Per-label probability tracks: bigWig through pyBigWig when it is installed, else bedGraph. Each file is
    written under a temporary name entered on ``stack`` (see :func:`genolm.outputs.atomic_file`): renamed into
    place when the stack closes normally, removed when it unwinds on an error."""

    def __init__(
        self, directory: Path, labels: list[str], lengths: dict[str, int], stack: contextlib.ExitStack
    ):
        directory.mkdir(parents=True, exist_ok=True)
        self.labels = labels
        try:
            import pyBigWig
        except ImportError:
            pyBigWig = None
        self.bigwig = pyBigWig is not None
        self.handles = []
        self.runs: list[list | None] = [None] * len(labels)
        self.paths = []
        for label in labels:
            if self.bigwig:
                path = directory / f"{label}.bw"
                handle = pyBigWig.open(str(stack.enter_context(atomic_file(path))), "w")
                handle.addHeader(list(lengths.items()), maxZooms=10)
            else:
                path = directory / f"{label}.bedGraph"
                handle = stack.enter_context(open(stack.enter_context(atomic_file(path)), "w"))
                handle.write(f'track type=bedGraph name="{label}" description="genolm P({label})"\n')
            self.handles.append(handle)
            self.paths.append(path)

    def add(self, chrom: str, start: int, probs: np.ndarray) -> None:
        for c, handle in enumerate(self.handles):
            values = probs[:, c].astype(np.float64)
            if self.bigwig:
                handle.addEntries(chrom, int(start), values=values, span=1, step=1)
                continue
            # bedGraph: merge runs of equal values (rounded to 4 decimals), carrying the last run over.
            rounded = np.round(values, 4)
            change = np.flatnonzero(np.diff(rounded)) + 1
            bounds = np.concatenate(([0], change, [len(rounded)]))
            for a, b in zip(bounds[:-1], bounds[1:]):
                run = self.runs[c]
                if run is not None and run[0] == chrom and run[2] == start + a and run[3] == rounded[a]:
                    run[2] = start + b
                    continue
                self._flush(c)
                self.runs[c] = [chrom, start + a, start + b, rounded[a]]

    def _flush(self, c: int) -> None:
        run = self.runs[c]
        if run is not None:
            self.handles[c].write(f"{run[0]}\t{run[1]}\t{run[2]}\t{run[3]:.4g}\n")
            self.runs[c] = None

    def close(self) -> None:
        for c, handle in enumerate(self.handles):
            if not self.bigwig:
                self._flush(c)
            handle.close()


@dataclass
class AnnotateReport:
    """What ``annotate_fasta`` did: bases and sequences processed, intervals per label, outputs, speed."""

    sequences: int = 0
    bases: int = 0
    intervals: dict[str, int] = field(default_factory=dict)
    tracks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bases_per_second(self) -> float:
        return self.bases / self.seconds if self.seconds > 0 else float("nan")


def _write_intervals(
    handle, fmt: str, chrom: str, labels: list[str], intervals, report: AnnotateReport, counter: int
) -> int:
    """Write intervals ``(label index, start, end, score)`` (0-based half-open) as GFF3 or BED6 lines; returns
    the running feature count (GFF3 ``ID`` s are ``genolm_<count>``)."""
    for c, start, end, score in intervals:
        counter += 1
        report.intervals[labels[c]] += 1
        if fmt == "gff3":  # 1-based closed
            handle.write(
                f"{chrom}\tgenolm\t{labels[c]}\t{start + 1}\t{end}\t{score:.4f}\t.\t.\t"
                f"ID=genolm_{counter};Name={labels[c]}\n"
            )
        else:  # BED6, 0-based half-open
            handle.write(f"{chrom}\t{start}\t{end}\t{labels[c]}\t{round(1000 * score)}\t.\n")
    return counter


def annotate_fasta(
    model,
    tokenizer,
    fasta: str | os.PathLike,
    out: str | os.PathLike,
    *,
    bigwig_dir: str | os.PathLike | None = None,
    window_tokens: int | None = None,
    stride_tokens: int | None = None,
    threshold: float = 0.5,
    skip_labels: Iterable[str] = (),
    batch_size: int = 8,
    chunk_bases: int = 1 << 20,
    progress: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    workers: Workers | None = None,
    fingerprint: dict | None = None,
) -> AnnotateReport:
    """Annotate every sequence of ``fasta`` with a loaded model and write intervals to ``out``.

    Each FASTA record is one chunk of work (see :mod:`genolm.inference.distributed`): the records are shared
    between the processes of a ``torchrun`` / ``accelerate launch`` job, a killed run resumes from the records
    it finished, and the output is the same whatever the number of processes. Intervals never cross records,
    so calling each record alone gives today's intervals; the GFF3 ``ID`` numbers are given at the merge, in
    file order. With tracks, each record's per-base probabilities are kept beside its part until the merge
    writes the tracks.

    Args:
        model, tokenizer: a loaded token-classification model and its tokenizer.
        fasta: genome FASTA (plain, gzip or bgzip), streamed sequence by sequence.
        out: ``.gff3``/``.gff`` (1-based closed, ``type`` = label, ``score`` = mean probability) or ``.bed``
            (BED6, 0-based half-open, name = label, score = round(1000 * mean probability)).
        bigwig_dir: also write one probability track per label here (``LABEL.bw``, or ``LABEL.bedGraph``
            without pyBigWig).
        window_tokens, stride_tokens: the tiling (see :func:`predict_bases`).
        threshold: calling threshold of multi-label models.
        skip_labels: labels to write no intervals for (e.g. a background class).
        batch_size: windows per forward pass.
        chunk_bases: bases read at a time.
        progress: progress bar.
        resume, overwrite, workers: see :func:`genolm.inference.distributed.run_in_chunks`.
        fingerprint: what identifies the model and options for ``resume`` (default: the model's config).
    """
    started = time.perf_counter()
    fasta, out = Path(fasta), Path(out)
    fmt = "bed" if out.name.lower().endswith(".bed") else "gff3"
    if fmt == "gff3" and not out.name.lower().endswith((".gff3", ".gff")):
        raise OutputPathError(f"{out}: expected a .gff3, .gff or .bed output file")
    config = model.config
    labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
    bad = [name for name in labels if not name or any(c in name for c in " \t;=,/")]
    if bad:
        raise InputDataError(f"labels {bad} cannot be GFF3 types or file names; rename them in config.id2label")
    unknown = set(skip_labels) - set(labels)
    if unknown:
        raise ConfigError(f"skip_labels {sorted(unknown)} are not labels of the model ({', '.join(labels)})")
    multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
    check_outputs({"--out": out}, {"--fasta": fasta}, folders={"--bigwig-dir": bigwig_dir}, overwrite=True)
    workers = workers or Workers()
    lengths = sequence_lengths(fasta)
    names = list(lengths)
    fingerprint = {
        "command": "annotate",
        "fasta": file_fingerprint(fasta),
        "model": {"config_sha256": hashlib.sha256(config.to_json_string().encode()).hexdigest()},
        **(fingerprint or {}),
        "options": {"window_tokens": window_tokens, "stride_tokens": stride_tokens, "threshold": threshold,
                    "skip_labels": sorted(skip_labels), "tracks": bigwig_dir is not None},
    }
    bar = tqdm(total=sum(lengths.values()), desc="annotate", unit="bp", unit_scale=True,
               disable=not (progress and workers.world == 1))
    records = iter_records(fasta, chunk_bases)
    done = 0  # records read from ``records``

    def write_chunk(chunk: int, path: Path) -> dict:
        nonlocal done
        for _ in range(chunk - done):  # records that other processes annotate
            for _block in next(records)[1]:
                pass
        name, blocks = next(records)
        done = chunk + 1
        caller = _IntervalCaller(labels, multi_label, threshold, set(skip_labels))
        report = AnnotateReport(intervals={label: 0 for label in labels})
        probs_path = _probs_path(path.parent, chunk)
        with contextlib.ExitStack() as stack:
            handle = stack.enter_context(open(path, "w"))
            probs_file = stack.enter_context(open(stack.enter_context(atomic_file(probs_path)), "wb")) \
                if bigwig_dir else None
            counter = 0
            for start, probs in predict_bases(
                model,
                tokenizer,
                (block.decode("ascii") for block in blocks),
                window_tokens=window_tokens,
                stride_tokens=stride_tokens,
                batch_size=batch_size,
                progress_bar=bar,
            ):
                counter = _write_intervals(handle, fmt, name, labels, caller.add(start, probs), report, counter)
                if probs_file is not None:
                    probs_file.write(np.ascontiguousarray(probs, dtype=np.float32).tobytes())
                report.bases = start + len(probs)
            _write_intervals(handle, fmt, name, labels, caller.finish(), report, counter)
        return {"bases": report.bases, "intervals": report.intervals}

    tracks_written: list[str] = []

    def merge(parts: list[Path], path: Path) -> None:
        with contextlib.ExitStack() as stack:  # the tracks are renamed into place with the intervals
            tracks = _TrackWriter(Path(bigwig_dir), labels, lengths, stack) if bigwig_dir else None
            with open(path, "w") as handle:
                if fmt == "gff3":
                    handle.write("##gff-version 3\n")
                    handle.writelines(
                        f"##sequence-region {name} 1 {length}\n" for name, length in lengths.items() if length
                    )
                _join_interval_parts(parts, handle, renumber=fmt == "gff3")
            if tracks is not None:
                for chunk, name in enumerate(names):
                    probs = np.memmap(_probs_path(parts[0].parent, chunk), np.float32, "r")
                    probs = probs.reshape(-1, len(labels))
                    for begin in range(0, len(probs), chunk_bases):
                        tracks.add(name, begin, np.asarray(probs[begin : begin + chunk_bases]))
                tracks.close()
                tracks_written.extend(str(p) for p in tracks.paths)

    stats = run_in_chunks(out, len(names), fingerprint, write_chunk, merge, resume=resume, overwrite=overwrite,
                          workers=workers, progress=progress and workers.world > 1)
    bar.close()
    report = AnnotateReport(intervals={label: 0 for label in labels}, tracks=tracks_written)
    for counts in stats:
        report.sequences += 1
        report.bases += counts["bases"]
        for label, n in counts["intervals"].items():
            report.intervals[label] += n
    report.seconds = time.perf_counter() - started
    return report


def _probs_path(folder: Path, chunk: int) -> Path:
    """Where a record's per-base probabilities wait for the merge to write the tracks (float32, bases x
    labels), beside the record's part."""
    return folder / f"part-{chunk:08d}.probs"


_GFF3_ID = re.compile(r"\tID=genolm_\d+;")


def _join_interval_parts(parts: list[Path], handle, renumber: bool) -> None:
    """Copy the records' interval lines in order; GFF3 ``ID`` s numbered over the whole file."""
    counter = 0
    for part in parts:
        with open(part) as source:
            if not renumber:
                shutil.copyfileobj(source, handle, 1 << 20)
                continue
            for line in source:
                counter += 1
                handle.write(_GFF3_ID.sub(f"\tID=genolm_{counter};", line, count=1))


def run_annotate(
    model,
    fasta: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tokenizer=None,
    bigwig_dir: str | os.PathLike | None = None,
    window_tokens: int | None = None,
    stride_tokens: int | None = None,
    threshold: float = 0.5,
    skip_labels: Iterable[str] = (),
    batch_size: int = defaults.ANNOTATE_BATCH_SIZE,
    device: str | None = defaults.DEVICE,
    dtype: str | None = defaults.DTYPE,
    compile: bool = defaults.COMPILE,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    workers: Workers | None = None,
) -> AnnotateReport:
    """``genolm annotate``: load a token-classification checkpoint and run :func:`annotate_fasta`; prints bp/s.
    Started as several processes, they share the FASTA's records (see :func:`annotate_fasta`)."""
    check_outputs(
        {"--out": out},
        {"--fasta": fasta, "--model": model if isinstance(model, (str, os.PathLike)) else None},
        folders={"--bigwig-dir": bigwig_dir},
        overwrite=True,
    )
    workers = workers or start_workers(device)
    fingerprint = {"model": model_fingerprint(model), "dtype": dtype}
    model, tokenizer = load_model(model, tokenizer, "token-classification", workers.device or device, dtype,
                                  compile)
    report = annotate_fasta(
        model,
        tokenizer,
        fasta,
        out,
        bigwig_dir=bigwig_dir,
        window_tokens=window_tokens,
        stride_tokens=stride_tokens,
        threshold=threshold,
        skip_labels=skip_labels,
        batch_size=batch_size,
        progress=progress,
        resume=resume,
        overwrite=overwrite,
        workers=workers,
        fingerprint=fingerprint,
    )
    if progress and workers.is_main:
        counts = ", ".join(f"{n} {label}" for label, n in report.intervals.items())
        kind = (
            "bigWig"
            if report.tracks and report.tracks[0].endswith(".bw")
            else "bedGraph (pyBigWig not installed)"
        )
        tracks = f"; {len(report.tracks)} {kind} tracks" if report.tracks else ""
        print(
            f"genolm annotate: {report.sequences} sequences, {report.bases:,} bp in {report.seconds:.1f} s "
            f"({report.bases_per_second:,.0f} bp/s); intervals: {counts}{tracks}",
            file=sys.stderr,
        )
    return report
