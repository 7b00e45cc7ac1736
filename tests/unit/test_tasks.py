"""One parse, spelling and label for task and dataset specs (data/tasks.py)."""

from __future__ import annotations

import pytest

from pruneviz.core.errors import DataError
from pruneviz.data.tasks import TaskSpec, canonical_spec


@pytest.mark.parametrize(
    ("text", "spec", "kind", "subset", "label"),
    [
        ("wiki", "wiki", "text", None, "Wikipedia"),
        (" mmlu ", "mmlu", "mmlu", None, "MMLU all subjects"),
        ("mmlu:Abstract_Algebra", "mmlu:abstract algebra", "mmlu", "abstract algebra", "MMLU abstract algebra"),
        ("mmlu:stem", "mmlu:STEM", "mmlu", "STEM", "MMLU STEM"),
        ("data/my corpus.jsonl", "data/my corpus.jsonl", "text", None, "my corpus.jsonl"),
        ("arc_easy", "arc_easy", "lm-eval", None, "arc_easy"),
        ("tasks/custom.yaml", "tasks/custom.yaml", "lm-eval", None, "tasks/custom.yaml"),
    ],
)
def test_a_spec_parses_to_one_spelling_kind_and_label(text, spec, kind, subset, label):
    parsed = TaskSpec.parse(text)
    assert (parsed.spec, parsed.kind, parsed.subset, parsed.label) == (spec, kind, subset, label)
    assert canonical_spec(text) == spec
    assert TaskSpec.parse(parsed.spec) == parsed  # the canonical spelling parses to itself


def test_an_existing_file_without_a_text_suffix_is_text_and_an_over_long_name_is_no_crash(tmp_path):
    corpus = tmp_path / "notes.md"
    corpus.write_text("Some text.\n")
    assert TaskSpec.parse(str(corpus)).kind == "text"
    assert TaskSpec.parse("x" * 5000).kind == "lm-eval"


def test_an_mmlu_spec_naming_no_subset_is_refused():
    with pytest.raises(DataError, match="names no MMLU subject or category after the colon"):
        TaskSpec.parse("mmlu: ,")
