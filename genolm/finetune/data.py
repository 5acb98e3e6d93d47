"""Labelled sequences for fine-tuning: reading tables or FASTA + label table, label encoding, tokenization
with explicit handling of long records (truncation or windows), and batching.

Input formats (by file suffix, optionally ``.gz``):

- ``.csv``, ``.tsv`` / ``.tab``, ``.parquet`` / ``.pq``, ``.jsonl`` / ``.ndjson`` / ``.json`` (JSON lines):
  one record per row, the DNA in ``sequence_column`` and the labels in ``label_columns`` (default ``label``,
  else ``labels``); an ``id``/``name`` column, if present, names records in predictions and messages.
- FASTA (``.fa``, ``.fasta``, ``.fna``, ...): records keyed by their id, with labels from a separate table
  (``labels_file``) that has an ``id_column``.

Labels by task:

- ``classification``: one value per record, integer class ids (``0 .. C-1``) or class names (sorted to ids).
- ``regression``: one number per record, several numeric columns, or a list per cell (multi-output).
- ``multilabel``: several 0/1 columns, or a list of 0/1 per cell (e.g. PGB chromatin ``labels``).
- ``token_classification``: one label per nucleotide: a list of integers (negative = unlabelled) or a string
  of the sequence's length with one symbol per base (digits are class ids; other symbols are class names).

Coordinates inside records are 0-based.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError, InputDataError
from ..genome import read_records
from ..genome.bases import VALID
from ..genome.fasta import is_fasta_name

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of positions without a label (the loss and metrics skip them)
SEQUENCE_TASKS = ("classification", "regression", "multilabel")
ID_COLUMNS = ("id", "name", "record_id", "seq_id")
MAX_CLASSES = 100_000  # integer labels above this are not class ids
# Letters a sequence may hold (after upper-casing): the tokenizer's A/C/G/T/N, U (read as T) and the IUPAC
# ambiguity codes (read as N); anything else would silently become <unk> tokens.
# The letters genolm reads in sequences (genolm.genome.bases: A/C/G/T, U, N, the IUPAC codes and X), upper case.
SEQUENCE_LETTERS = "".join(chr(b) for b in range(ord("A"), ord("Z") + 1) if VALID[b])
_INVALID_LETTER = re.compile(f"[^{SEQUENCE_LETTERS}]")


# ----------------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Records:
    """Labelled records of one split (raw labels, before encoding).

    ``labels`` holds one entry per record: a scalar, a list (multi-output / per-nucleotide), or a string of
    per-nucleotide symbols. ``label_names`` are the label columns when several were read.
    """

    ids: list[str]
    sequences: list[str]
    labels: list[Any]
    source: str
    label_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.sequences)

    def subset(self, index: Sequence[int], source: str | None = None) -> Records:
        return Records(
            ids=[self.ids[i] for i in index],
            sequences=[self.sequences[i] for i in index],
            labels=[self.labels[i] for i in index],
            source=source or self.source,
            label_names=self.label_names,
        )


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bgz"):
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def is_fasta(path: str | Path) -> bool:
    """Whether ``path`` names a FASTA file (by suffix, ``.gz`` allowed)."""
    return is_fasta_name(Path(path).name)


def read_table(path: str | Path, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV, TSV, Parquet or JSON-lines table (chosen by suffix; ``.gz`` allowed for text formats).

    ``text_columns`` of CSV / TSV files are kept as text (a per-nucleotide label string such as ``"0012"``
    would otherwise be read as a number).
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: no such file")
    suffix = _suffix(path)
    dtype = dict.fromkeys(text_columns, str)
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=dtype)
        if suffix in (".tsv", ".tab", ".txt"):
            return pd.read_csv(path, sep="\t", dtype=dtype)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson", ".json"):
            if path.stat().st_size == 0:
                raise InputDataError(f"{path}: empty table (no rows)")
            return pd.read_json(path, lines=True)
    except pd.errors.EmptyDataError:
        raise InputDataError(f"{path}: empty table (no header, no rows)") from None
    except pd.errors.ParserError as err:
        raise InputDataError(f"{path}: not a readable {suffix[1:].upper()} table: {err}") from None
    raise InputDataError(
        f"{path}: unknown table format {suffix!r}; use .csv, .tsv, .parquet or .jsonl (or FASTA)"
    )


def _clean_sequence(value: Any, where: str) -> str:
    """The sequence upper-cased without whitespace; :class:`InputDataError` naming ``where`` when it is missing
    or holds a letter outside :data:`SEQUENCE_LETTERS`."""
    if not isinstance(value, str) or not value.strip():
        raise InputDataError(f"{where}: missing or empty sequence ({value!r})")
    sequence = "".join(value.split())
    bad = _INVALID_LETTER.search(sequence.upper())
    if bad:
        raise InputDataError(
            f"{where}: invalid character {sequence[bad.start()]!r} at position {bad.start() + 1} of the sequence "
            f"(allowed: {SEQUENCE_LETTERS}, either case)"
        )
    return sequence.upper()


def _row_name(path: Path, r: int) -> str:
    """How a user finds row ``r`` (0-based, header excluded) of a table: its line in a text file."""
    suffix = _suffix(path)
    if suffix in (".csv", ".tsv", ".tab", ".txt"):
        return f"line {r + 2}"  # the header is line 1
    if suffix in (".jsonl", ".ndjson", ".json"):
        return f"line {r + 1}"
    return f"row {r}"


_LabelKind = str  # "missing", "integer", "number" (not integer-valued), "name"


def _label_kind(value: Any) -> _LabelKind:
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "missing"
    if _is_integer_like(value):
        return "integer"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "number"
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return "name"
        return "integer" if math.isfinite(number) and number.is_integer() else "number"
    return "name"


def classification_labels(values: Sequence[Any], where: Sequence[str]) -> list[int] | list[str]:
    """Class labels of one column, checked and of one type: integer class ids (``1``, ``1.0``, ``"1"``) as
    ``int``, or class names as ``str``.

    ``where[i]`` names record ``i`` in messages. Raises :class:`InputDataError` for a missing label, a number
    that is not an integer (``2.5`` is not a class), or a column mixing numbers and names.
    """
    kinds = [_label_kind(v) for v in values]
    for i, kind in enumerate(kinds):
        if kind == "missing":
            raise InputDataError(f"{where[i]}: no label")
        if kind == "number":
            raise InputDataError(
                f"{where[i]}: label {values[i]!r} is not a class (class ids are integers 0..C-1, or use "
                "class names; continuous values need task regression)"
            )
    if "name" in kinds and "integer" in kinds:
        n, i = kinds.index("name"), kinds.index("integer")
        raise InputDataError(
            f"the label column mixes class names and numbers: {where[n]} has {values[n]!r}, {where[i]} has "
            f"{values[i]!r} (use one type per label column)"
        )
    if "name" in kinds:
        return [str(v) for v in values]
    return [int(float(v)) if isinstance(v, str) else int(v) for v in values]


def _check_numeric(values: Sequence[Any], where: Sequence[str]) -> None:
    """Regression / multi-label cells must be numbers or lists of numbers."""
    for i, value in enumerate(values):
        _as_vector(value, where[i])


def _resolve_label_columns(
    columns: Sequence[str], label_columns: Sequence[str] | None, where: str
) -> list[str]:
    if label_columns:
        missing = [c for c in label_columns if c not in columns]
        if missing:
            raise InputDataError(f"{where}: label column(s) {missing} not found; columns: {list(columns)}")
        return list(label_columns)
    for name in ("label", "labels"):
        if name in columns:
            return [name]
    raise InputDataError(f"{where}: no 'label' or 'labels' column (columns: {list(columns)}); set label_columns")


def load_records(
    path: str | Path,
    sequence_column: str = "sequence",
    label_columns: Sequence[str] | None = None,
    labels_file: str | Path | None = None,
    id_column: str = "id",
    task: str | None = None,
) -> Records:
    """Read one split.

    Args:
        path: a table with ``sequence_column``, or a FASTA file (then ``labels_file`` is required).
        sequence_column: column of the DNA sequence (tables only).
        label_columns: label column(s); default ``label``, else ``labels``.
        labels_file: table of labels keyed by FASTA record id (column ``id_column``).
        id_column: id column of ``labels_file``; for tables, the first of ``id_column``, ``id``, ``name`` found
            names the records (else the 0-based row number).
        task: with ``"token_classification"`` the label column of CSV / TSV files is read as text.

    Returns:
        :class:`Records` in file order.
    """
    path = Path(path)
    text_columns = ["label", "labels", *(label_columns or ())] if task == "token_classification" else []
    if is_fasta(path):
        if labels_file is None:
            raise InputDataError(
                f"{path}: a FASTA input needs labels_file (a table of labels keyed by record id)"
            )
        records = [(seq_id, seq.upper()) for seq_id, seq in read_records(path)]
        ids, sequences = [seq_id for seq_id, _ in records], [seq for _, seq in records]
        table = read_table(labels_file, text_columns=[*text_columns, id_column])
        if id_column not in table.columns:
            raise InputDataError(f"{labels_file}: no id column {id_column!r} (columns: {list(table.columns)})")
        columns = _resolve_label_columns(table.columns, label_columns, str(labels_file))
        table[id_column] = table[id_column].astype(str)
        duplicated = table[id_column][table[id_column].duplicated()]
        if len(duplicated):
            raise InputDataError(f"{labels_file}: record id {duplicated.iloc[0]!r} appears more than once")
        table = table.set_index(id_column)
        missing = [i for i in ids if i not in table.index]
        if missing:
            raise InputDataError(
                f"{path}: {len(missing)} record(s) have no row in {labels_file}, e.g. {missing[0]!r} "
                f"(matched on column {id_column!r})"
            )
        rows = table.loc[ids, columns]
        if not ids:
            raise InputDataError(f"{path}: no records")
        sequences = [_clean_sequence(s, f"{path}: record {i!r}") for i, s in zip(ids, sequences)]
        where = [f"{labels_file}: record {i!r}" for i in ids]
    else:
        table = read_table(path, text_columns=text_columns)
        if sequence_column not in table.columns:
            raise InputDataError(
                f"{path}: no sequence column {sequence_column!r} (columns: {list(table.columns)})"
            )
        columns = _resolve_label_columns(table.columns, label_columns, str(path))
        id_col = next((c for c in (id_column, *ID_COLUMNS) if c in table.columns), None)
        ids = table[id_col].astype(str).tolist() if id_col else [str(i) for i in range(len(table))]
        where = [f"{path}: {_row_name(path, r)} (id {i!r})" for r, i in enumerate(ids)]
        if not len(table):
            raise InputDataError(f"{path}: no records (the table has a header but no rows)")
        sequences = [_clean_sequence(s, w) for w, s in zip(where, table[sequence_column])]
        rows = table[columns]
    if len(columns) == 1:
        labels = rows[columns[0]].tolist()
        names = None
        if task == "classification":
            labels = classification_labels(labels, [f"{w}, column {columns[0]!r}" for w in where])
        elif task in ("regression", "multilabel"):
            _check_numeric(labels, [f"{w}, column {columns[0]!r}" for w in where])
    else:
        for column in columns:
            _check_numeric(rows[column].tolist(), [f"{w}, column {column!r}" for w in where])
        labels = [np.asarray(v, dtype=np.float64) for v in rows.to_numpy(dtype=np.float64)]
        names = list(columns)
    return Records(ids=ids, sequences=sequences, labels=labels, source=str(path), label_names=names)


def split_validation(records: Records, fraction: float, seed: int) -> tuple[Records, Records]:
    """Hold out a random ``fraction`` of ``records`` (at least one) as a validation split; file order kept."""
    n = len(records)
    n_val = max(1, int(round(n * fraction)))
    if n_val >= n:
        raise InputDataError(f"{records.source}: {n} record(s) are too few to hold out a validation split")
    order = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return (
        records.subset(train.tolist(), f"{records.source} (train part)"),
        records.subset(val.tolist(), f"{records.source} (validation part)"),
    )


# ----------------------------------------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------------------------------------
def _as_vector(value: Any, where: str) -> np.ndarray:
    """A list-like label cell (list, array, JSON text, or text separated by commas/semicolons/spaces)."""
    cell = value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise InputDataError(f"{where}: expected a number or a list of numbers, got {cell!r}") from None
        else:
            value = [v for v in re.split(r"[,;\s]+", text) if v]
    try:
        return np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputDataError(f"{where}: expected a number or a list of numbers, got {cell!r}") from None


def _is_integer_like(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return True
    if isinstance(value, (int, np.integer)):
        return True
    if isinstance(value, (float, np.floating)):
        return math.isfinite(value) and float(value).is_integer()
    return False


@dataclass
class LabelSpec:
    """How raw labels become model targets, fixed on the training split.

    Attributes:
        task: one of ``classification``, ``regression``, ``multilabel``, ``token_classification``.
        num_labels: classes (classification, token) or outputs (regression, multilabel).
        names: class names (classification, token) or output / label names.
        symbols: token tasks with string labels: symbol -> class id.
    """

    task: str
    num_labels: int
    names: list[str]
    class_index: dict[Any, int] | None = None
    symbols: dict[str, int] | None = None

    @classmethod
    def fit(cls, task: str, records: Records, class_names: Sequence[str] | None = None) -> LabelSpec:
        """Infer the label space from the training records.

        ``class_names`` (classification, token classification) names classes ``0..C-1`` for integer labels,
        or fixes the order of named classes; it may list classes absent from the training data.
        """
        where = records.source
        if records.label_names and task in ("classification", "token_classification"):
            raise InputDataError(
                f"{where}: {task} takes one label column, got {len(records.label_names)}: {records.label_names}"
            )
        if task == "classification":
            values = classification_labels(records.labels, [f"{where}: record {i!r}" for i in records.ids])
            found = sorted(set(values))
            if len(found) < 2:
                raise InputDataError(
                    f"{where}: the training labels hold one class only ({found[0]!r}); classification needs "
                    "at least two"
                )
            if isinstance(values[0], int):
                if found[0] < 0:
                    raise InputDataError(f"{where}: class ids must be >= 0 (found {found[0]})")
                return cls._integer_classes(task, found[-1], class_names, where)
            return cls._named_classes(task, found, class_names, where)
        if task in ("regression", "multilabel"):
            _check_numeric(records.labels, [f"{where}: record {i!r}" for i in records.ids])
            first = _as_vector(records.labels[0], f"{where}: record {records.ids[0]!r}")
            width = first.size
            if records.label_names:
                names = list(records.label_names)
            elif width == 1:
                names = ["label"]
            else:
                names = [f"label_{j}" for j in range(width)]
            return cls(task, width, names)
        if task == "token_classification":
            if all(isinstance(v, str) for v in records.labels):
                chars = sorted(set("".join(records.labels)))
                if all(c.isdigit() for c in chars):
                    return cls._integer_classes(task, int(max(chars)), class_names, where)
                spec = cls._named_classes(task, chars, class_names, where)
                spec.symbols, spec.class_index = spec.class_index, None
                return spec
            top = max(int(_as_vector(v, where).max(initial=0)) for v in records.labels)
            return cls._integer_classes(task, top, class_names, where)
        raise ConfigError(f"unknown task {task!r}")

    @classmethod
    def _integer_classes(
        cls, task: str, top: int, class_names: Sequence[str] | None, where: str
    ) -> LabelSpec:
        if top >= MAX_CLASSES:
            raise InputDataError(f"{where}: class id {top} >= {MAX_CLASSES}; are these labels class ids?")
        if class_names:
            if top >= len(class_names):
                raise InputDataError(f"{where}: class id {top} but only {len(class_names)} class_names")
            return cls(task, len(class_names), list(class_names))
        n = max(2, top + 1)
        return cls(task, n, [str(i) for i in range(n)])

    @classmethod
    def _named_classes(
        cls, task: str, found: list[str], class_names: Sequence[str] | None, where: str
    ) -> LabelSpec:
        names = list(class_names) if class_names else found
        unknown = sorted(set(found) - set(names))
        if unknown:
            raise InputDataError(f"{where}: classes {unknown} are not in class_names {names}")
        if len(names) < 2:
            raise InputDataError(f"{where}: only one class ({names[0]!r}) in the training labels")
        return cls(task, len(names), names, class_index={n: i for i, n in enumerate(names)})

    def encode(self, records: Records) -> np.ndarray | list[np.ndarray]:
        """Targets of ``records``: (n,) int64 class ids; (n, num_labels) float32 for regression / multilabel;
        for token classification one (len(sequence),) int64 array per record (-100 = no label)."""
        where = records.source
        if self.task == "classification":
            out = np.empty(len(records), dtype=np.int64)
            labels = classification_labels(records.labels, [f"{where}: record {i!r}" for i in records.ids])
            for r, value in enumerate(labels):
                if self.class_index is None:
                    if not _is_integer_like(value) or not 0 <= int(value) < self.num_labels:
                        raise InputDataError(
                            f"{where}: record {records.ids[r]!r}: label {value!r} is not a class id in "
                            f"0..{self.num_labels - 1} (classes fixed by the training data)"
                        )
                    out[r] = int(value)
                else:
                    if str(value) not in self.class_index:
                        raise InputDataError(
                            f"{where}: record {records.ids[r]!r}: class {value!r} does not occur in the "
                            f"training data (classes: {', '.join(self.names)})"
                        )
                    out[r] = self.class_index[str(value)]
            return out
        if self.task in ("regression", "multilabel"):
            out = np.empty((len(records), self.num_labels), dtype=np.float32)
            for r, value in enumerate(records.labels):
                vector = _as_vector(value, f"{where}: record {records.ids[r]!r}")
                if vector.size != self.num_labels:
                    raise InputDataError(
                        f"{where}: record {records.ids[r]!r} has {vector.size} label value(s), expected "
                        f"{self.num_labels}"
                    )
                if not np.isfinite(vector).all():
                    raise InputDataError(f"{where}: record {records.ids[r]!r} has a missing label value")
                if self.task == "multilabel" and not np.isin(vector, (0.0, 1.0)).all():
                    raise InputDataError(f"{where}: record {records.ids[r]!r}: multi-label values must be 0 or 1")
                out[r] = vector
            return out
        encoded = []
        for r, (value, sequence) in enumerate(zip(records.labels, records.sequences)):
            rid = f"{where}: record {records.ids[r]!r}"
            if isinstance(value, str):
                if self.symbols is None:
                    if not value.isdigit():
                        raise InputDataError(
                            f"{rid}: per-nucleotide labels must be digits, got {value[:20]!r}..."
                        )
                    labels = np.frombuffer(value.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord("0")
                else:
                    unknown = set(value) - set(self.symbols)
                    if unknown:
                        raise InputDataError(f"{rid}: label symbol(s) {sorted(unknown)} not in the training data")
                    labels = np.array([self.symbols[c] for c in value], dtype=np.int64)
            else:
                labels = _as_vector(value, rid).astype(np.int64)
            if labels.size != len(sequence):
                raise InputDataError(
                    f"{rid}: {labels.size} per-nucleotide labels for a {len(sequence)} nt sequence"
                )
            labels[labels < 0] = IGNORE_INDEX
            if (labels >= self.num_labels).any():
                raise InputDataError(f"{rid}: label {labels.max()} >= number of classes {self.num_labels}")
            encoded.append(labels)
        return encoded


# ----------------------------------------------------------------------------------------------------------
# tokenization and windows
# ----------------------------------------------------------------------------------------------------------
def window_starts(length: int, window: int, stride: int) -> list[int]:
    """0-based starts of windows of ``window`` nt every ``stride`` nt covering ``[0, length)``; the last window
    is moved back to end at ``length`` (so all windows are full unless the record is shorter than one)."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


@dataclass
class EncodedSplit:
    """Model inputs of one split, one row per window (one window per record when truncating).

    Attributes:
        input_ids: per window, (tokens,) int64 ids with ``<cls>`` first; tokens <= max_length.
        record: (n_windows,) index of the window's record.
        labels: sequence tasks: (n_windows,) int64 or (n_windows, num_labels) float32; token tasks: per window
            (tokens, k) (per nucleotide) or (tokens,) int64 with -100 where there is no label.
        positions: token tasks: per window (tokens, k) int64 record coordinate of each nucleotide of each token,
            -1 where there is none (``<cls>``, the missing bases of short tokens).
        record_labels: the records' encoded labels (for scoring pooled predictions).
        n_truncated: records (or windows) that did not fit in max_length tokens.
    """

    input_ids: list[np.ndarray]
    record: np.ndarray
    labels: Any
    record_ids: list[str]
    record_labels: Any
    record_lengths: np.ndarray
    positions: list[np.ndarray] | None = None
    n_truncated: int = 0
    longest_tokens: int = 0
    source: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_records(self) -> int:
        return len(self.record_ids)

    @property
    def n_tokens(self) -> int:
        return int(sum(len(ids) for ids in self.input_ids))


def _token_positions(offsets: np.ndarray, start: int, k: int) -> np.ndarray:
    """(tokens, 2) character spans in a window starting at record coordinate ``start`` -> (tokens, k)."""
    span = offsets[:, 1] - offsets[:, 0]
    j = np.arange(k)
    return np.where(j[None, :] < span[:, None], start + offsets[:, :1] + j[None, :], -1)


def _majority(labels: np.ndarray, num_labels: int) -> np.ndarray:
    """(tokens, k) labels (-100 = none) -> (tokens,) most frequent label per token (lowest on ties)."""
    counts = np.stack([(labels == c).sum(1) for c in range(num_labels)], axis=1)
    return np.where(counts.max(1) > 0, counts.argmax(1), IGNORE_INDEX)


def encode_split(
    records: Records,
    spec: LabelSpec,
    tokenizer: Any,
    max_length: int,
    long_sequences: str = "truncate",
    window_stride: int | None = None,
    per_nucleotide: bool = True,
) -> EncodedSplit:
    """Tokenize ``records`` into model inputs, handling records longer than ``max_length`` tokens.

    ``long_sequences="truncate"`` keeps the first ``max_length`` tokens (``<cls>`` included) and logs a
    warning with the count; ``"windows"`` cuts each record into windows of ``(max_length - 1) * k`` nt every
    ``window_stride`` nt (default half a window), the last one aligned to the record's end; every window takes
    the record's label (sequence tasks) or its own nucleotides' labels (token classification).
    """
    if long_sequences not in ("truncate", "windows"):
        raise ConfigError(f"long_sequences must be 'truncate' or 'windows', got {long_sequences!r}")
    k = tokenizer.k
    token_task = spec.task == "token_classification"
    targets = spec.encode(records)
    window_nt = (max_length - 1) * k
    stride = window_stride or max(1, window_nt // 2)

    pieces, piece_record, piece_start = [], [], []
    for r, sequence in enumerate(records.sequences):
        starts = window_starts(len(sequence), window_nt, stride) if long_sequences == "windows" else [0]
        for start in starts:
            end = start + window_nt if long_sequences == "windows" else len(sequence)
            pieces.append(sequence[start:end])
            piece_record.append(r)
            piece_start.append(start)
    encoding = tokenizer(
        pieces, add_special_tokens=True, return_offsets_mapping=token_task, return_attention_mask=False
    )

    input_ids, labels, positions = [], [], []
    truncated_records: set[int] = set()
    longest = 0
    for i, ids in enumerate(encoding["input_ids"]):
        r = piece_record[i]
        longest = max(longest, len(ids))
        if len(ids) > max_length:
            truncated_records.add(r)
            ids = ids[:max_length]
        input_ids.append(np.asarray(ids, dtype=np.int64))
        if token_task:
            offsets = np.asarray(encoding["offset_mapping"][i][: len(ids)], dtype=np.int64).reshape(-1, 2)
            pos = _token_positions(offsets, piece_start[i], k)
            record_labels = targets[r]
            lab = np.where(pos >= 0, record_labels[np.clip(pos, 0, None)], IGNORE_INDEX)
            positions.append(pos)
            labels.append(lab if per_nucleotide else _majority(lab, spec.num_labels))
        else:
            labels.append(targets[r])

    if truncated_records:
        unit = "window(s) of" if long_sequences == "windows" else "record(s) of"
        logger.warning(
            "%s: %d %s %d longer than max_length=%d tokens (longest %d); truncated to the first %d tokens%s",
            records.source,
            len(truncated_records),
            unit,
            len(records),
            max_length,
            longest,
            max_length,
            "" if long_sequences == "windows" else " (set long_sequences=windows to cover them)",
        )
    return EncodedSplit(
        input_ids=input_ids,
        record=np.asarray(piece_record, dtype=np.int64),
        labels=labels if token_task else np.stack(labels),
        record_ids=list(records.ids),
        record_labels=targets,
        record_lengths=np.asarray([len(s) for s in records.sequences], dtype=np.int64),
        positions=positions if token_task else None,
        n_truncated=len(truncated_records),
        longest_tokens=longest,
        source=records.source,
    )


# ----------------------------------------------------------------------------------------------------------
# batching
# ----------------------------------------------------------------------------------------------------------
class EncodedDataset(torch.utils.data.Dataset):
    """Map-style dataset over an :class:`EncodedSplit`: items ``{"input_ids", "labels"}`` (numpy), plus
    ``"window"`` (the row index) when ``with_window``, which the evaluation uses to pool predictions."""

    def __init__(self, split: EncodedSplit, with_window: bool = False):
        self.split = split
        self.with_window = with_window

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"input_ids": self.split.input_ids[i], "labels": self.split.labels[i]}
        if self.with_window:
            item["window"] = i
        return item


@dataclass
class Collator:
    """Pad a list of items to the longest in the batch (or to ``pad_to_multiple_of``).

    Returns ``input_ids`` and ``attention_mask`` (batch, tokens), ``labels`` (batch,) int64,
    (batch, num_labels) float32, or for token tasks (batch, tokens[, k]) int64 padded with -100, and
    ``window`` (batch,) when the items carry it.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    label_pad: int = IGNORE_INDEX

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)
        for b, item in enumerate(items):
            input_ids[b, : len(item["input_ids"])] = torch.as_tensor(item["input_ids"])
        batch = {"input_ids": input_ids, "attention_mask": input_ids.ne(self.pad_token_id).long()}
        first = np.asarray(items[0]["labels"])
        if first.ndim >= 1 and first.dtype == np.int64:  # per-token labels
            labels = torch.full((len(items), length, *first.shape[1:]), self.label_pad, dtype=torch.long)
            for b, item in enumerate(items):
                labels[b, : len(item["labels"])] = torch.as_tensor(item["labels"])
        elif np.issubdtype(first.dtype, np.floating):
            labels = torch.as_tensor(np.stack([item["labels"] for item in items]), dtype=torch.float32)
        else:
            labels = torch.as_tensor(np.asarray([item["labels"] for item in items]), dtype=torch.long)
        batch["labels"] = labels
        if "window" in items[0]:
            batch["window"] = torch.as_tensor([item["window"] for item in items], dtype=torch.long)
        return batch


def task_class_names(train: str | Path, task: str, class_names: Sequence[str] | None) -> list[str] | None:
    """The class names to train with: ``class_names`` if given, else the ``label_names`` of the ``task.json``
    that ``genolm data make-task`` wrote beside ``train``.

    Raises :class:`ConfigError` when both exist and differ (the labels in the files follow ``task.json``).
    """
    if task not in ("classification", "token_classification"):
        return list(class_names) if class_names else None
    info_file = Path(train).parent / "task.json"
    names = None
    if info_file.is_file():
        try:
            info = json.loads(info_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise InputDataError(f"{info_file}: cannot read the task description: {err}") from None
        if Path(train).name in info.get("files", {}).values():
            names = info.get("label_names")
    if names and class_names and list(class_names) != list(names):
        raise ConfigError(
            f"class_names {list(class_names)} differ from label_names {names} in {info_file}; "
            "drop class_names to use the task's names"
        )
    return list(class_names or names or []) or None


__all__ = [
    "Collator",
    "EncodedDataset",
    "EncodedSplit",
    "IGNORE_INDEX",
    "LabelSpec",
    "Records",
    "encode_split",
    "is_fasta",
    "load_records",
    "read_table",
    "split_validation",
    "task_class_names",
    "window_starts",
]
