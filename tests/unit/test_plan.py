"""Pruning plans: unit syntax, canonical strings, validation errors."""

from __future__ import annotations

import pytest

from pruneviz.core.errors import PlanError, SettingError
from pruneviz.core.plan import MEASURED_SELECTIONS, RANKED_SELECTIONS, PruningPlan, Unit, unit_selection, units_of


@pytest.mark.parametrize(
    ("text", "layer", "sublayer", "kind"),
    [("12", 12, None, "block"), ("12.attn", 12, "attn", "attn"), ("12.mlp", 12, "mlp", "mlp"), (" 0.attn ", 0, "attn", "attn")],
)
def test_unit_parse_and_print(text, layer, sublayer, kind):
    unit = Unit.parse(text)
    assert (unit.layer, unit.sublayer, unit.kind) == (layer, sublayer, kind)
    assert str(unit) == text.strip()
    assert Unit.parse(str(unit)) == unit


def test_unit_sublayers():
    assert Unit(3).sublayers() == ((3, "attn"), (3, "mlp"))
    assert Unit(3, "mlp").sublayers() == ((3, "mlp"),)


@pytest.mark.parametrize("bad", ["12.ffn", "attn", "-1", "1.2", "3.attn.mlp", "x", "12 .attn", "1e3"])
def test_malformed_unit_raises_naming_it(bad):
    with pytest.raises(PlanError) as caught:
        Unit.parse(bad)
    assert f"'{bad}'" in str(caught.value)


def test_malformed_unit_inside_plan_names_that_unit():
    with pytest.raises(PlanError, match=r"'7\.ffn'"):
        PruningPlan.parse("3.attn,7.ffn,12")


@pytest.mark.parametrize("bad", ["3,,4", "3,", ",3", " , "])
def test_empty_item_in_plan_is_refused(bad):
    with pytest.raises(PlanError, match="empty item"):
        PruningPlan.parse(bad)


def test_canonical_string_sorted_numerically():
    plan = PruningPlan.parse("12.mlp, 3.attn,7")
    assert str(plan) == "3.attn,7,12.mlp"
    assert plan == PruningPlan.parse("7,12.mlp,3.attn")
    assert len(plan) == 4  # 3.attn, 7.attn, 7.mlp, 12.mlp


def test_block_written_once_when_both_sublayers_pruned():
    assert str(PruningPlan.parse("5.mlp,5.attn")) == "5"
    assert str(PruningPlan.parse("5,5.attn")) == "5"
    assert str(PruningPlan.parse("10.attn,2.mlp,2.attn,10.mlp,1.attn")) == "1.attn,2,10"
    assert PruningPlan.parse("5") == PruningPlan.parse("5.attn,5.mlp")


@pytest.mark.parametrize("text", [None, "", "none", "NONE", " none "])
def test_empty_plan(text):
    plan = PruningPlan.parse(text)
    assert len(plan) == 0 and str(plan) == "" and plan.first_layer() is None
    assert plan == PruningPlan()


def test_round_trip_through_string():
    plan = PruningPlan.of(["29", "0.mlp", Unit(14, "attn")])
    assert PruningPlan.parse(str(plan)) == plan
    assert str(plan) == "0.mlp,14.attn,29"


def test_out_of_range_index_names_the_unit():
    with pytest.raises(PlanError) as caught:
        PruningPlan.parse("3.attn,40.attn", n_blocks=30)
    message = str(caught.value)
    assert "40.attn" in message and "0-29" in message
    with pytest.raises(PlanError, match="names '30' but"):  # the whole block, as it was written
        PruningPlan.parse("30", n_blocks=30)
    # the last block is in range
    assert str(PruningPlan.parse("29", n_blocks=30)) == "29"


def test_validate_returns_self():
    plan = PruningPlan.parse("1.mlp")
    assert plan.validate(4) is plan


def test_membership_union_and_helpers():
    plan = PruningPlan.parse("2.attn") | PruningPlan.parse("2.mlp,4.attn")
    assert str(plan) == "2,4.attn"
    assert (2, "mlp") in plan and (4, "mlp") not in plan
    assert plan.first_layer() == 2
    assert not plan.is_everything(5)
    assert PruningPlan.of(units_of(3, "block")).is_everything(3)


def test_units_of_granularities():
    assert [str(u) for u in units_of(2, "block")] == ["0", "1"]
    assert [str(u) for u in units_of(2, "sublayer")] == ["0.attn", "0.mlp", "1.attn", "1.mlp"]
    assert [str(u) for u in units_of(2, "mlp")] == ["0.mlp", "1.mlp"]
    assert units_of(2, "both") == units_of(2, "sublayer")
    assert [str(u) for u in units_of(1, "all")] == ["0", "0.attn", "0.mlp"]
    with pytest.raises(SettingError, match="'layer' is not a unit selection here; use one of block, attn, mlp"):
        units_of(2, "layer")


def test_every_unit_selection_is_measured_by_an_influence_selection_holding_its_units():
    for name in RANKED_SELECTIONS:
        selection = unit_selection(name)
        measured = unit_selection(selection.measured_as, MEASURED_SELECTIONS)
        assert set(selection.units(5)) <= set(measured.units(5))
    with pytest.raises(SettingError, match="use one of block, attn, mlp, both"):
        unit_selection("sublayer", RANKED_SELECTIONS)


@pytest.mark.parametrize("blank", ["  ", "\t", " \n "])
def test_a_plan_of_blanks_is_refused_not_read_as_unpruned(blank):
    with pytest.raises(PlanError, match="only blanks; write units like '3.attn, 7', or leave it empty"):
        PruningPlan.parse(blank)


@pytest.mark.parametrize("text", ["\uff13", "\uff11\uff12.attn", "\u0663.mlp", "1\u0662"])  # full-width 3, 12; Arabic-Indic 3, 2
def test_only_ascii_digits_name_a_block(text):
    with pytest.raises(PlanError, match="is not a unit"):
        PruningPlan.parse(text)


def test_a_huge_plan_is_quoted_short_in_its_error():
    with pytest.raises(PlanError) as caught:
        PruningPlan.parse(",".join(["3.atn"] * 20_000))
    assert len(str(caught.value)) < 200 and "'3.atn' is not a unit" in str(caught.value)
    with pytest.raises(PlanError) as caught:
        PruningPlan.parse("3.attn," * 20_000)  # a trailing comma: an empty last item
    assert len(str(caught.value)) < 200 and "... (140,000 characters)' has an empty item" in str(caught.value)
    with pytest.raises(PlanError) as caught:
        PruningPlan.parse("x" * 100_000)
    assert len(str(caught.value)) < 200 and "(100,000 characters)" in str(caught.value)
