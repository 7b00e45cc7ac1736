"""Generative tasks' items (pruneviz.data.generative): deterministic, well-formed, and scored right."""

from __future__ import annotations

import pytest
from conftest import byte_tokenizer

from pruneviz.core.errors import DataError, SettingError
from pruneviz.data import generative
from pruneviz.data.generative import (
    OPEN,
    arithmetic_answer,
    exact_match,
    generative_items,
    parens_answer,
    prompt_format,
    prompt_ids,
)
from pruneviz.data.tasks import TaskSpec


def test_generated_items_are_the_same_every_time():
    for task in ("arithmetic", "parens"):
        first = generative_items(task, 50)
        generative.arithmetic_items.cache_clear()
        generative.parens_items.cache_clear()
        assert generative_items(task, 50) == first
        assert len({item.item_id for item in first}) == 50
    # pinned: a change to the generators changes what results mean (and must change task_fingerprint)
    assert [item.reference for item in generative_items("arithmetic", 6)] == ["93", "21", "5244", "634", "-217", "28560"]
    assert generative_items("parens", 1)[0].reference == ") ]"


def test_arithmetic_references_are_right_and_cover_three_operations():
    items = generative_items("arithmetic")
    assert len(items) == generative.GENERATED_ITEMS
    for item in items:
        a, op, b = item.prompt.splitlines()[-1].removesuffix(" =").split(" ")
        assert int(item.reference) == eval(f"{a} {op} {b}")  # noqa: S307 - digits and one operator
        assert item.instruction == f"Calculate {a} {op} {b}. Reply with the number only."
    assert {item.prompt.splitlines()[-1].split(" ")[1] for item in items} == {"+", "-", "*"}


def test_parens_references_close_the_sequence():
    for item in generative_items("parens"):
        sequence = item.prompt.splitlines()[-2].removeprefix("Input: ").split(" ")
        stack = []
        for bracket in sequence + item.reference.split(" "):
            if bracket in OPEN:
                stack.append(bracket)
            else:
                assert stack and OPEN.index(stack.pop()) == ")]}>".index(bracket)
        assert not stack and item.reference


def test_humaneval_loads_164_problems_from_the_package():
    items = generative_items("humaneval")
    assert len(items) == 164 and items[0].item_id == "HumanEval/0" and items[-1].item_id == "HumanEval/163"
    assert all(item.entry_point and "def check(candidate)" in item.reference for item in items)
    assert items[0].reply_start.endswith(items[0].prompt) and "\ndef" in items[0].stop
    assert len(generative_items("humaneval", 5)) == 5


@pytest.mark.parametrize("completion, reference, right", [
    (" 579", "579", True), (" 123 + 456 = 579.", "579", True), (" 1,234", "1234", True), (" -8\n", "-8", True),
    (" 578", "579", False), (" I cannot", "579", False), ("", "579", False),
])
def test_arithmetic_scoring(completion, reference, right):
    assert exact_match("arithmetic", completion, reference) is right


@pytest.mark.parametrize("completion, reference, right", [
    (" ) ]", ") ]", True), (")]", ") ]", True), (" ) ] }", ") ]", False), (" ]", ") ]", False), ("", ")", False),
])
def test_parens_scoring(completion, reference, right):
    assert exact_match("parens", completion, reference) is right


def test_answers_are_extracted():
    assert arithmetic_answer("no number") is None and arithmetic_answer("x = 12, y = -3") == "-3"
    assert parens_answer("Output: ) > ]") == ") > ]"


def test_prompt_formats():
    tokenizer = byte_tokenizer()  # no chat template: a base model
    assert prompt_format(tokenizer) == "plain"
    with pytest.raises(SettingError):
        prompt_format(tokenizer, "chat")
    with pytest.raises(SettingError):
        prompt_format(tokenizer, "markdown")
    tokenizer.chat_template = "{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}<assistant>"
    assert prompt_format(tokenizer) == "chat"
    item = generative_items("humaneval", 1)[0]
    chat = tokenizer.decode(prompt_ids(tokenizer, item, "chat"))
    assert chat.startswith("<user>Complete the following") and chat.endswith("<assistant>" + item.reply_start)
    assert tokenizer.decode(prompt_ids(tokenizer, item, "plain")) == item.prompt


def test_task_specs_name_generative_tasks():
    for task in ("humaneval", "arithmetic", "parens", " HumanEval "):
        spec = TaskSpec.parse(task)
        assert spec.kind == "generative" and spec.spec == task.strip().lower()
    assert TaskSpec.parse("humaneval").label == "HumanEval"


def test_bad_inputs_are_one_sentence():
    with pytest.raises(DataError):
        generative_items("gsm8k")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(SettingError):
            generative_items("arithmetic", bad)
