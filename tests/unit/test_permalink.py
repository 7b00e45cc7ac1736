"""Permalink query parameters: parsing, capping by the deployment, rendering."""

from __future__ import annotations

import pytest

from pruneviz.deployment import Deployment, Limits
from pruneviz.ui.permalinks import Param, parse, render


def test_values_are_parsed_to_their_setting_type():
    open_deployment = Deployment()
    assert parse("log", Param("influence_log", bool), "1", open_deployment) is True
    assert parse("windows", Param("wiki_windows", int, limit="samples", highest=512), "100000", open_deployment) == 512
    assert parse("plan", Param("plan", str), "7,3.attn", open_deployment) == "3.attn,7"
    assert parse("format", Param("mmlu_format", str, ("letter", "cloze")), "cloze", open_deployment) == "cloze"


def test_demo_mode_caps_numbers():
    demo = Deployment(demo=True, limits=Limits(samples=32))
    assert parse("windows", Param("wiki_windows", int, limit="samples", highest=512), "100000", demo) == 32


@pytest.mark.parametrize(("name", "param", "text", "message"), [
    ("log", Param("influence_log", bool), "yes", "must be 0 or 1"),
    ("windows", Param("wiki_windows", int, limit="samples"), "0", "at least 1"),
    ("windows", Param("wiki_windows", int, limit="samples"), "-3", "at least 1"),
    ("plan", Param("plan", str), "3.ffn", "plan was ignored"),
    ("format", Param("mmlu_format", str, ("letter", "cloze")), "essay", "must be one of letter, cloze"),
])
def test_malformed_values_name_the_parameter(name, param, text, message):
    with pytest.raises(ValueError, match=message):
        parse(name, param, text, Deployment())


def test_render_round_trips():
    assert render(True) == "1" and render(False) == "0" and render(8) == "8" and render("3.attn") == "3.attn"


def test_a_list_of_tasks_round_trips_and_an_unknown_one_is_named():
    tasks = Param("curves_generative", list, ("humaneval", "arithmetic", "parens"))
    assert render(["humaneval", "parens"]) == "humaneval,parens"
    assert parse("generative", tasks, "humaneval,parens,humaneval", Deployment()) == ["humaneval", "parens"]
    assert parse("generative", tasks, "", Deployment()) == []
    with pytest.raises(ValueError, match="may list only humaneval, arithmetic, parens \\(got 'gsm8k'\\); it was ignored"):
        parse("generative", tasks, "humaneval,gsm8k", Deployment())


def test_every_page_that_offers_generative_tasks_links_them():
    """Session 8 left the generative settings out of the links: a link dropped HumanEval from the evaluation set."""
    from pruneviz.ui.permalinks import page_params

    prune = page_params("Prune and evaluate")
    assert prune["humaneval"].key == "use_humaneval" and prune["per_task"].key == "generative_per_task"
    assert prune["prompt"].choices == ("auto", "plain", "chat")
    for page, key in (("Pruning curves", "curves"), ("Task trade-offs", "tradeoff"), ("Recovery", "recovery")):
        assert page_params(page)["generative"].key == f"{key}_generative" and page_params(page)["per_task"].key == f"{key}_per_task"
