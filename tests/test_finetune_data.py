"""Reading, label encoding, long-record handling and batching of genolm.finetune (no training)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from genolm.errors import InputDataError
from genolm.finetune import (
    IGNORE_INDEX,
    Collator,
    EncodedDataset,
    LabelSpec,
    encode_split,
    load_records,
    pool_windows,
    stitch_nucleotides,
    window_starts,
)
from genolm.finetune.data import Records


@pytest.fixture(scope="module")
def poly_a(shared_data) -> pd.DataFrame:
    """20 real rows of the PGB polyadenylation train subset (read in place)."""
    return pd.read_csv(shared_data / "pgb" / "poly_a.arabidopsis_thaliana" / "train.csv", nrows=20)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl", ".csv.gz"])
def test_table_formats_read_alike(poly_a, tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        poly_a.to_parquet(path)
    elif suffix == ".jsonl":
        poly_a.to_json(path, orient="records", lines=True)
    else:
        poly_a.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    records = load_records(path)
    assert records.sequences == poly_a["sequence"].tolist()
    assert records.labels == poly_a["label"].tolist()
    assert records.ids == poly_a["name"].tolist()  # the 'name' column names records


def test_fasta_with_label_table(poly_a, tmp_path):
    fasta = tmp_path / "seqs.fa"
    with open(fasta, "w") as handle:
        for name, seq in zip(poly_a["name"], poly_a["sequence"]):
            handle.write(f">{name} description\n")
            handle.writelines(seq[i : i + 60].lower() + "\n" for i in range(0, len(seq), 60))
    labels = poly_a[["name", "label"]].iloc[::-1].rename(columns={"name": "id"})  # any row order
    labels.to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    records = load_records(fasta, labels_file=tmp_path / "labels.tsv")
    assert records.ids == poly_a["name"].tolist()
    assert records.sequences == poly_a["sequence"].tolist()  # upper-cased, lines joined
    assert records.labels == poly_a["label"].tolist()

    labels.iloc[1:].to_csv(tmp_path / "partial.csv", index=False)
    with pytest.raises(ValueError, match="partial.csv") as err:
        load_records(fasta, labels_file=tmp_path / "partial.csv")
    assert poly_a["name"].iloc[-1] in str(err.value)
    with pytest.raises(ValueError, match="labels_file"):
        load_records(fasta)


def test_label_spec_classes_and_errors(poly_a):
    seqs = poly_a["sequence"].tolist()[:4]
    named = Records(["a", "b", "c", "d"], seqs, ["donor", "none", "acceptor", "none"], "train.csv")
    spec = LabelSpec.fit("classification", named)
    assert spec.names == ["acceptor", "donor", "none"]
    np.testing.assert_array_equal(spec.encode(named), [1, 2, 0, 2])
    ordered = LabelSpec.fit("classification", named, class_names=["none", "donor", "acceptor"])
    np.testing.assert_array_equal(ordered.encode(named), [1, 0, 2, 0])
    unseen = Records(["x"], seqs[:1], ["branch"], "val.csv")
    with pytest.raises(ValueError, match=r"val.csv: record 'x': class 'branch'"):
        spec.encode(unseen)

    integers = Records(["a", "b"], seqs[:2], [0, 1], "t.csv")
    assert LabelSpec.fit("classification", integers).num_labels == 2
    with pytest.raises(ValueError, match="not a class id"):
        LabelSpec.fit("classification", integers).encode(Records(["z"], seqs[:1], [2], "v.csv"))


def _table(path, sequences, labels, column="label"):
    pd.DataFrame({"sequence": sequences, column: labels}).to_csv(path, index=False)
    return path


def test_classification_labels_have_one_type_and_two_classes(poly_a, tmp_path):
    seqs = poly_a["sequence"].tolist()[:4]
    mixed = _table(tmp_path / "mixed.csv", seqs, ["0", "1", "2.5", "yes"])
    with pytest.raises(InputDataError, match=r"mixed.csv: line 4 \(id '2'\), column 'label': label '2.5' is not a "
                       r"class \(class ids are integers"):
        load_records(mixed, task="classification")
    with pytest.raises(InputDataError, match=r"record '2': label '2.5' is not a class"):  # without the task
        LabelSpec.fit("classification", load_records(mixed))
    names_and_ids = _table(tmp_path / "names.csv", seqs, ["0", "1", "yes", "1"])
    with pytest.raises(InputDataError, match=r"mixes class names and numbers: .*names.csv: line 4 \(id '2'\), "
                       r"column 'label' has 'yes', .*line 2 \(id '0'\), column 'label' has '0'"):
        load_records(names_and_ids, task="classification")
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps({"sequence": s, "label": v}) + "\n" for s, v in zip(seqs, [0, 1, 2.5, 1])))
    with pytest.raises(InputDataError, match=r"t.jsonl: line 3 \(id '2'\), column 'label': label 2.5 is not"):
        load_records(jsonl, task="classification")

    # Integer-like values of any type are class ids: 1.0 from a float column, "1" from a text column.
    records = load_records(_table(tmp_path / "floats.csv", seqs, [0.0, 1.0, 1.0, 0.0]), task="classification")
    assert records.labels == [0, 1, 1, 0] and all(type(v) is int for v in records.labels)

    single = load_records(_table(tmp_path / "single.csv", seqs, [1, 1, 1, 1]), task="classification")
    with pytest.raises(InputDataError, match=r"single.csv: the training labels hold one class only \(1\); "
                       "classification needs at least two"):
        LabelSpec.fit("classification", single)
    with pytest.raises(InputDataError, match="one class only \\('yes'\\)"):
        LabelSpec.fit("classification", Records(["a", "b"], seqs[:2], ["yes", "yes"], "yes.csv"), ["no", "yes"])
    with pytest.raises(InputDataError, match=r"holes.csv: line 3 \(id '1'\), column 'label': no label"):
        load_records(_table(tmp_path / "holes.csv", seqs, [0, None, 1, 0]), task="classification")


def test_regression_labels_are_numbers(poly_a, tmp_path):
    seqs = poly_a["sequence"].tolist()[:3]
    path = _table(tmp_path / "reg.csv", seqs, ["0.5", "high", "2"], column="expression")
    with pytest.raises(InputDataError, match=r"reg.csv: line 3 \(id '1'\), column 'expression': expected a number or a "
                       r"list of numbers, got 'high'"):
        load_records(path, label_columns=["expression"], task="regression")
    table = pd.DataFrame({"sequence": seqs, "leaf": [0.5, 1.0, 2.0], "root": [1.0, "low", 3.0]})
    table.to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(InputDataError, match=r"two.csv: line 3 \(id '1'\), column 'root': expected a number"):
        load_records(tmp_path / "two.csv", label_columns=["leaf", "root"], task="regression")


def test_invalid_sequences_and_empty_tables_are_named(poly_a, tmp_path):
    seqs = poly_a["sequence"].tolist()[:3]
    bad = [seqs[0], seqs[1][:10] + "x-Z" + seqs[1][10:], seqs[2]]  # x: hard-masked base (read as N); '-' is not
    path = _table(tmp_path / "bad.csv", bad, [0, 1, 0])
    with pytest.raises(InputDataError, match=r"bad.csv: line 3 \(id '1'\): invalid character '-' at position 12 of "
                       r"the sequence \(allowed: ABCDGHKMNRSTUVWXY, either case\)"):
        load_records(path, task="classification")
    # Lower case, RNA and IUPAC codes are sequence; whitespace is dropped.
    ok = _table(tmp_path / "ok.csv", ["acgtn", "ACGU RYK", "gattaca"], [0, 1, 0])
    assert load_records(ok).sequences == ["ACGTN", "ACGURYK", "GATTACA"]

    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputDataError, match=r"empty.csv: empty table \(no header, no rows\)"):
        load_records(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("sequence,label\n")
    with pytest.raises(InputDataError, match=r"header.csv: no records \(the table has a header but no rows\)"):
        load_records(tmp_path / "header.csv")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputDataError, match=r"empty.jsonl: empty table"):
        load_records(tmp_path / "empty.jsonl")
    with pytest.raises(InputDataError, match=r"absent.csv: no such file"):
        load_records(tmp_path / "absent.csv")
    with pytest.raises(InputDataError, match=r"absent.fa: FASTA file not found"):
        load_records(tmp_path / "absent.fa", labels_file=tmp_path / "header.csv")


def test_multilabel_and_multi_output_cells(poly_a, tmp_path):
    table = poly_a.iloc[:3][["sequence"]].copy()
    table["labels"] = ["[0, 1, 0]", "1;0;1", "0 0 1"]
    table.to_csv(tmp_path / "ml.csv", index=False)
    records = load_records(tmp_path / "ml.csv")
    spec = LabelSpec.fit("multilabel", records)
    np.testing.assert_array_equal(spec.encode(records), [[0, 1, 0], [1, 0, 1], [0, 0, 1]])

    table = poly_a.iloc[:3][["sequence"]].assign(expr_leaf=[0.5, 1.0, -2.0], expr_root=[1.0, 2.0, 3.0])
    table.to_parquet(tmp_path / "reg.parquet")
    records = load_records(tmp_path / "reg.parquet", label_columns=["expr_leaf", "expr_root"])
    spec = LabelSpec.fit("regression", records)
    assert spec.names == ["expr_leaf", "expr_root"]
    assert spec.encode(records).shape == (3, 2)


def test_window_starts_cover_the_record():
    assert window_starts(50, 60, 30) == [0]
    starts = window_starts(400, 90, 45)
    assert starts[0] == 0 and starts[-1] == 310 and all(b - a <= 45 for a, b in zip(starts, starts[1:]))


def _check_positions(split, records, tokenizer):
    """Every (token, base) position must point at the base the token spells."""
    for w, (ids, pos) in enumerate(zip(split.input_ids, split.positions)):
        seq = records.sequences[split.record[w]]
        tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
        assert tokens[0] == "<cls>" and (pos[0] == -1).all()
        for t in range(1, len(tokens)):
            spelled = "".join(seq[p] for p in pos[t] if p >= 0)
            assert spelled == tokens[t], (w, t)


def test_token_positions_match_the_tokens(poly_a, tokenizer):
    seqs = [poly_a["sequence"][0][:100], poly_a["sequence"][1][:37] + "NN" + poly_a["sequence"][1][37:83]]
    labels = ["".join("1" if b in "GC" else "0" for b in s) for s in seqs]
    records = Records(["a", "b"], seqs, labels, "t")
    spec = LabelSpec.fit("token_classification", records)
    for mode in ("truncate", "windows"):
        split = encode_split(records, spec, tokenizer, max_length=8, long_sequences=mode, window_stride=20)
        _check_positions(split, records, tokenizer)
        for lab, pos, w in zip(split.labels, split.positions, split.record):
            expected = np.where(pos >= 0, spec.encode(records)[w][np.clip(pos, 0, None)], IGNORE_INDEX)
            np.testing.assert_array_equal(lab, expected)
    per_token = encode_split(records, spec, tokenizer, max_length=8, per_nucleotide=False)
    assert per_token.labels[0].shape == (8,) and per_token.labels[0][0] == IGNORE_INDEX


def test_truncation_warns_and_windows_cover(poly_a, tokenizer, caplog):
    records = Records(list("abc"), poly_a["sequence"].tolist()[:3], [0, 1, 0], "poly_a.csv")
    spec = LabelSpec.fit("classification", records)
    with caplog.at_level(logging.WARNING):
        split = encode_split(records, spec, tokenizer, max_length=16)
    assert split.n_truncated == 3 and len(split) == 3
    assert all(len(ids) == 16 for ids in split.input_ids)
    assert "poly_a.csv: 3 record(s) of 3 longer than max_length=16" in caplog.text
    windows = encode_split(records, spec, tokenizer, max_length=16, long_sequences="windows")
    assert windows.n_truncated == 0 and len(windows) > 3
    # 400 nt records, 90 nt windows every 45 nt: 8 windows each, the last one ending at the record's end
    assert np.bincount(windows.record).tolist() == [8, 8, 8]
    np.testing.assert_array_equal(windows.labels, np.repeat([0, 1, 0], 8))


def test_pool_windows_and_stitching():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 3)).astype(np.float32)
    record = np.array([0, 0, 1, 2, 2, 2, 1])
    mean = pool_windows(logits, record, 3, "mean")
    top = pool_windows(logits, record, 3, "max")
    for r in range(3):
        np.testing.assert_allclose(mean[r], logits[record == r].mean(0), rtol=1e-6)
        np.testing.assert_allclose(top[r], logits[record == r].max(0))

    # two records (5 and 4 nt); windows of 2 tokens x k=2 bases; base 2 of record 0 covered twice
    positions = [np.array([[0, 1], [2, -1]]), np.array([[2, 3], [4, -1]]), np.array([[0, 1], [2, 3]])]
    window_logits = [rng.normal(size=(2, 2, 3)) for _ in range(3)]
    stitched, covered = stitch_nucleotides(window_logits, positions, np.array([0, 0, 1]), np.array([5, 4]))
    np.testing.assert_allclose(stitched[2], (window_logits[0][1, 0] + window_logits[1][0, 0]) / 2, rtol=1e-6)
    np.testing.assert_allclose(stitched[5 + 3], window_logits[2][1, 1], rtol=1e-6)
    assert covered.tolist() == [True] * 5 + [True] * 4


def test_collator_shapes(poly_a, tokenizer):
    records = Records(
        list("ab"), [poly_a["sequence"][0][:30], poly_a["sequence"][1][:60]], ["0" * 30, "1" * 60], "t"
    )
    spec = LabelSpec.fit("token_classification", records)
    split = encode_split(records, spec, tokenizer, max_length=32)
    batch = Collator(tokenizer.pad_token_id)([EncodedDataset(split, with_window=True)[i] for i in range(2)])
    assert batch["input_ids"].shape == (2, 11) and batch["labels"].shape == (2, 11, 6)
    assert batch["attention_mask"][0].tolist() == [1] * 6 + [0] * 5
    assert (batch["labels"][0, 6:] == IGNORE_INDEX).all() and batch["window"].tolist() == [0, 1]


def test_jsonl_list_labels_and_class_names(tmp_path, poly_a):
    rows = [{"sequence": s[:12], "labels": [0, 2, -100] + [1] * 9} for s in poly_a["sequence"][:2]]
    (tmp_path / "tok.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = load_records(tmp_path / "tok.jsonl")
    spec = LabelSpec.fit("token_classification", records, class_names=["intergenic", "exon", "cds", "intron"])
    assert spec.num_labels == 4
    assert spec.encode(records)[0][:3].tolist() == [0, 2, IGNORE_INDEX]
