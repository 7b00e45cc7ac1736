"""Adaptive influence (Shapley values) on a tiny model: estimators against exact enumeration, prefix reuse."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import tiny_llama

from pruneviz.core.loading import from_modules
from pruneviz.core.plan import PruningPlan, units_of
from pruneviz.influence import shapley
from pruneviz.influence.objectives import ObjectiveData
from pruneviz.influence.shapley import adaptive_influence, subnetwork_values


def random_text_data(vocab: int = 128, rows: int = 6, seq: int = 12, seed: int = 1) -> ObjectiveData:
    """Next-token data on random tokens, with right padding in every other row."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (rows, seq), generator=generator)
    mask = torch.ones(rows, seq, dtype=torch.long)
    mask[1::2, seq - 4 :] = 0
    ids[mask == 0] = 0
    scored = mask[:, :-1].bool() & mask[:, 1:].bool()
    r, p = scored.nonzero(as_tuple=True)
    return ObjectiveData(ids, mask, r, p, ids[r, p + 1], None, "random tokens", f"random:{seed}")


@pytest.fixture(scope="module")
def tiny3():
    """A 3-block tiny Llama: 3 block units or 6 sublayer units, small enough for exact enumeration."""
    return from_modules("tiny3", tiny_llama(n_blocks=3, seed=3), tokenizer=None)


def exact_shapley(loaded, data, units, objective="loss") -> tuple[np.ndarray, float, float]:
    """Exact Shapley values by enumerating all 2^n subnetworks; returns (shapley, v(all), v(none))."""
    n = len(units)
    subsets = [frozenset(s) for k in range(n + 1) for s in itertools.combinations(range(n), k)]
    plans = [PruningPlan.of([u for i, u in enumerate(units) if i not in s]) for s in subsets]
    v = dict(zip(subsets, subnetwork_values(loaded, data, objective, plans)))
    shapley = np.zeros(n)
    for s in subsets:
        for i in range(n):
            if i in s:
                continue
            weight = math.factorial(len(s)) * math.factorial(n - len(s) - 1) / math.factorial(n)
            shapley[i] += weight * (v[s | {i}] - v[s])
    return shapley, v[frozenset(range(n))], v[frozenset()]


@pytest.mark.parametrize("objective", ["loss", "logit"])
def test_permutation_shapley_matches_exact_enumeration(tiny3, objective):
    data = random_text_data()
    units = units_of(3, "sublayer")
    exact, v_all, v_none = exact_shapley(tiny3, data, units, objective)
    result = adaptive_influence(tiny3, data, units, objective, "permutation", budget=40, seed=0)
    estimate = -result.table["value"].to_numpy()
    stderr = result.table["stderr"].to_numpy()
    assert np.all(stderr > 0)
    # within 4 standard errors (plus float noise) of the exact value, unit by unit
    assert np.all(np.abs(estimate - exact) <= 4 * stderr + 1e-6), (estimate, exact, stderr)
    # efficiency: every permutation's marginals sum to v(all) - v(none), so the estimate does too
    assert result.total_effect == pytest.approx(v_all - v_none, abs=1e-9)
    assert estimate.sum() == pytest.approx(v_all - v_none, abs=1e-6)
    assert exact.sum() == pytest.approx(v_all - v_none, abs=1e-6)


def test_subsample_estimate_matches_its_exact_expectation(tiny3):
    """The subsample estimator targets mean v(S) over kept-k subsets with i minus those without i."""
    data = random_text_data()
    units = units_of(3, "sublayer")
    n, keep = len(units), 3  # round(0.5 * 6)
    subsets = [frozenset(s) for s in itertools.combinations(range(n), keep)]
    plans = [PruningPlan.of([u for i, u in enumerate(units) if i not in s]) for s in subsets]
    v = dict(zip(subsets, subnetwork_values(tiny3, data, "loss", plans)))
    expected = np.array([
        np.mean([v[s] for s in subsets if i in s]) - np.mean([v[s] for s in subsets if i not in s]) for i in range(n)
    ])
    result = adaptive_influence(tiny3, data, units, "loss", "subsample", fraction=0.5, budget=80, seed=0)
    estimate, stderr = -result.table["value"].to_numpy(), result.table["stderr"].to_numpy()
    assert np.all(stderr > 0)
    assert np.all(np.abs(estimate - expected) <= 4 * stderr), (estimate, expected, stderr)
    # at most C(6, 3) = 20 distinct subnetworks exist, each evaluated once
    assert result.subnetworks <= 20


def test_leave_one_out_is_full_minus_each_removal(tiny3):
    data = random_text_data()
    units = units_of(3, "sublayer")
    plans = [PruningPlan()] + [PruningPlan.of([u]) for u in units]
    full, *without = subnetwork_values(tiny3, data, "loss", plans)
    result = adaptive_influence(tiny3, data, units, "loss", "loo")
    np.testing.assert_allclose(result.table["value"].to_numpy(), np.array(without) - full, rtol=0, atol=1e-12)
    assert result.table["stderr"].isna().all()
    assert list(result.table["metric"].unique()) == ["loss_shapley"]


def test_prefix_reuse_equals_naive_and_saves_block_forwards(tiny):
    data = random_text_data()
    units = units_of(4, "sublayer")
    reused = adaptive_influence(tiny, data, units, "loss", "loo", reuse_prefix=True)
    naive = adaptive_influence(tiny, data, units, "loss", "loo", reuse_prefix=False)
    np.testing.assert_allclose(reused.table["value"], naive.table["value"], rtol=0, atol=1e-5)
    # one batch: reference pass (4 blocks) + per unit the blocks from its own block on
    assert reused.count.computed == 4 + sum(4 - u.layer for u in units)
    assert naive.count.computed == 4 + 4 * (len(units) + 1) == naive.count.naive == reused.count.naive
    assert reused.count.computed + reused.count.reused == reused.count.naive


def test_permutation_plans_resume_from_the_previous_plan_not_only_the_unpruned_model(tiny):
    """A permutation walks nested plans; each resumes where it first differs from any plan already run."""
    data = random_text_data()
    units = units_of(4, "block")
    result = adaptive_influence(tiny, data, units, "loss", "permutation", budget=1, seed=3)
    naive = adaptive_influence(tiny, data, units, "loss", "permutation", budget=1, seed=3, reuse_prefix=False)
    np.testing.assert_allclose(result.table["value"], naive.table["value"], rtol=0, atol=1e-5)
    prefix_only = 4 + sum(4 - (4 if plan.first_layer() is None else plan.first_layer()) for plan in _permutation_plans(units, seed=3))
    assert result.count.computed < prefix_only < naive.count.computed


def _permutation_plans(units, seed):
    """The distinct plans one antithetic permutation pair evaluates (as adaptive_influence draws them)."""
    import random

    order = list(range(len(units)))
    random.Random(seed).shuffle(order)
    plans = [PruningPlan(), shapley._plan_without(units, set()), *shapley._pair_plans(units, order)]
    return list(dict.fromkeys(plans))[1:]  # the first is the reference pass


def test_base_plan_keeps_units_pruned_in_every_subnetwork(tiny):
    data = random_text_data()
    base = PruningPlan.parse("0.attn")
    result = adaptive_influence(tiny, data, units_of(4, "sublayer"), "loss", "loo", base=base)
    values = dict(zip(result.table["unit"], result.table["value"]))
    assert values["0.attn"] == 0.0  # already pruned: removing it again changes nothing
    v_base, v_more = subnetwork_values(tiny, data, "loss", [base, base | PruningPlan.parse("2.mlp")])
    assert values["2.mlp"] == pytest.approx(v_more - v_base, abs=1e-12)


def test_progress_counts_work_units_with_one_total_for_the_whole_run(tiny):
    """LOO over the 8 sublayers of the 4-block model, one batch: a reference pass (2 x 4 sublayers + head),
    the empty plan (head only), and per pruned unit the present sublayers from its block on plus the head."""
    calls = []
    adaptive_influence(tiny, random_text_data(), units_of(4, "sublayer"), "loss", "loo", progress=lambda d, t: calls.append((d, t)))
    expected = (2 * 4 + 1) + 1 + sum(1 + 2 * (4 - layer) - 1 for layer in range(4) for _ in ("attn", "mlp"))
    assert {total for _, total in calls} == {expected}
    done = [d for d, _ in calls]
    assert done[0] == 0 and done[-1] == expected and done == sorted(done)


def test_permutation_progress_has_one_total_across_pairs(tiny3):
    calls = []
    adaptive_influence(tiny3, random_text_data(), units_of(3, "block"), "loss", "permutation", budget=3,
                       progress=lambda d, t: calls.append((d, t)))
    assert len({total for _, total in calls}) == 1
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == calls[0][1] > 0


@pytest.mark.parametrize("batch_size", [8, 4])
def test_cancelled_permutation_run_resumes_from_cached_subnetworks(tiny3, monkeypatch, tmp_path, batch_size):
    """Cancel half-way, rerun: subnetworks finished before the cancel are read back, not recomputed."""
    import pruneviz.influence.shapley as shapley
    from pruneviz.core.errors import Cancelled

    monkeypatch.setenv("PRUNEVIZ_CACHE_DIR", str(tmp_path))
    objective_calls = []
    real_objective = shapley.objective_sum

    def spy(*args, **kwargs):
        objective_calls.append(1)
        return real_objective(*args, **kwargs)

    monkeypatch.setattr(shapley, "objective_sum", spy)
    data, units = random_text_data(), units_of(3, "sublayer")
    settings = dict(objective="loss", estimator="permutation", budget=4, seed=1, batch_size=batch_size)
    uninterrupted = adaptive_influence(tiny3, data, units, **settings, use_cache=False)
    whole = len(objective_calls)
    objective_calls.clear()

    def cancel_half_way(done: int, total: int) -> None:
        if done >= total // 2:
            raise Cancelled("The user cancelled.")

    with pytest.raises(Cancelled):
        adaptive_influence(tiny3, data, units, **settings, use_cache=True, progress=cancel_half_way)
    before_cancel = len(objective_calls)
    objective_calls.clear()
    resumed = adaptive_influence(tiny3, data, units, **settings, use_cache=True)
    after_restart = len(objective_calls)
    assert 0 < before_cancel < whole and 0 < after_restart < whole
    if batch_size == 8:
        # one batch: every subnetwork is complete (and cached) when its objective is computed
        assert before_cancel + after_restart == whole
    else:
        # two batches: at most one pass of CHECKPOINT_PLANS subnetworks was cut short by the cancel
        assert whole <= before_cancel + after_restart <= whole + shapley.CHECKPOINT_PLANS
    np.testing.assert_array_equal(resumed.table["value"].to_numpy(), uninterrupted.table["value"].to_numpy())
    np.testing.assert_array_equal(resumed.table["stderr"].to_numpy(), uninterrupted.table["stderr"].to_numpy())
    assert resumed.subnetworks == uninterrupted.subnetworks
    # it says what it resumed: the subnetworks the cancelled run finished (one objective per subnetwork and batch)
    batches = 1 if batch_size == 8 else 2
    assert uninterrupted.resumed == 0 and 0 < resumed.resumed <= before_cancel // batches < resumed.subnetworks
    assert resumed.resumed + after_restart // batches == resumed.subnetworks
    # a third run reads everything back and computes nothing
    objective_calls.clear()
    again = adaptive_influence(tiny3, data, units, **settings, use_cache=True)
    assert objective_calls == [] and again.count.computed == 0
    np.testing.assert_array_equal(again.table["value"].to_numpy(), uninterrupted.table["value"].to_numpy())


def test_subnetwork_cache_key_covers_the_data_and_objective(tiny3, monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEVIZ_CACHE_DIR", str(tmp_path))
    units = units_of(3, "block")
    first = adaptive_influence(tiny3, random_text_data(seed=1), units, "loss", "loo", use_cache=True)
    other_data = adaptive_influence(tiny3, random_text_data(seed=2), units, "loss", "loo", use_cache=True)
    other_objective = adaptive_influence(tiny3, random_text_data(seed=1), units, "logit", "loo", use_cache=True)
    assert other_data.count.computed > 0 and other_objective.count.computed > 0
    assert not np.allclose(first.table["value"], other_data.table["value"])
    assert not np.allclose(first.table["value"], other_objective.table["value"])


def test_prefix_reuse_survives_a_store_too_small_for_every_plans_states(tiny, monkeypatch):
    """The unpruned states are pinned: a run's own states fill the store but never evict them."""
    from pruneviz.engine.hidden_store import HiddenStateStore

    data = random_text_data()
    units = units_of(4, "sublayer")
    state = data.input_ids.shape[0] * data.input_ids.shape[1] * tiny.info.hidden_size * 4  # one [B, T, d] fp32 state
    monkeypatch.setattr(shapley, "private_store", lambda: HiddenStateStore(cpu_bytes=5 * state))
    small = adaptive_influence(tiny, data, units, "loss", "loo")
    assert small.count.computed == 4 + sum(4 - u.layer for u in units)  # as with room for everything
