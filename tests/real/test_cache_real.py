"""Result cache on the embedded model: evaluations and influences hit the cache, a corrupt result is recomputed,
and keys cover everything that changes a result."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import corrupt_entry

from pruneviz import api
from pruneviz.core import cache
from pruneviz.core.plan import PruningPlan
from pruneviz.evaluation.results import EvaluationResult
from pruneviz.influence.static import CSV_COLUMNS


@pytest.mark.real
def test_evaluate_twice_hits_the_cache(smollm2, fresh_cache):
    plan = PruningPlan.parse("2.attn")
    first = api.evaluate(smollm2, plan, "wiki", windows=2, seq_len=16)
    second = api.evaluate(smollm2, plan, "wiki", windows=2, seq_len=16)
    assert (first.from_cache, second.from_cache) == (False, True)
    assert second.metrics == first.metrics and second.plan == "2.attn"
    # the result, plus the checkpoint of its one batch (2 windows of 16 tokens)
    assert len(fresh_cache) == 2
    (key,) = [k for k in fresh_cache.iterkeys() if isinstance(cache._unseal(k, fresh_cache[k]), EvaluationResult)]
    # corrupt the stored result: it is recomputed, not trusted
    corrupt_entry(fresh_cache, key)
    third = api.evaluate(smollm2, plan, "wiki", windows=2, seq_len=16)
    assert third.from_cache is False
    assert third.metrics["perplexity"] == pytest.approx(first.metrics["perplexity"], rel=1e-9)
    assert api.evaluate(smollm2, plan, "wiki", windows=2, seq_len=16).from_cache is True
    # use_cache=False computes afresh
    assert api.evaluate(smollm2, plan, "wiki", windows=2, seq_len=16, use_cache=False).from_cache is False


@pytest.mark.real
def test_keys_cover_plan_model_data_and_parameters(smollm2, monkeypatch):
    keys = []

    def spy(key, compute, use_cache=True, callbacks=None):
        # record the key and skip the computation (influence tables are concatenated afterwards)
        keys.append(key)
        return (pd.DataFrame(columns=CSV_COLUMNS) if computing_influence else SimpleNamespace(settings={})), False

    computing_influence = False

    # evaluations and influences key their calls with cached_call, which stores through cache.cached
    monkeypatch.setattr(cache, "cached", spy)
    other_model = dataclasses.replace(smollm2, fingerprint="0123456789abcdef")
    empty = PruningPlan()
    api.evaluate(smollm2, empty, "wiki", windows=2, seq_len=16)
    api.evaluate(smollm2, empty, "wiki", windows=2, seq_len=16)  # same call, same key
    variants = [
        lambda: api.evaluate(smollm2, PruningPlan.parse("1.attn"), "wiki", windows=2, seq_len=16),
        lambda: api.evaluate(smollm2, PruningPlan.parse("1"), "wiki", windows=2, seq_len=16),
        lambda: api.evaluate(other_model, empty, "wiki", windows=2, seq_len=16),
        lambda: api.evaluate(smollm2, empty, "wiki", windows=3, seq_len=16),
        lambda: api.evaluate(smollm2, empty, "wiki", windows=2, seq_len=17),
        lambda: api.evaluate(smollm2, empty, "mmlu", fmt="letter"),
        lambda: api.evaluate(smollm2, empty, "mmlu", fmt="cloze"),
        lambda: api.evaluate(smollm2, empty, "mmlu", fmt="auto"),  # auto resolves to cloze for 135M
        lambda: api.evaluate(smollm2, empty, "mmlu:anatomy", fmt="cloze"),
        lambda: api.evaluate(smollm2, empty, "mmlu", fmt="cloze", shots=1),
        lambda: api.evaluate(smollm2, empty, "mmlu", fmt="cloze", per_subject=3),
        lambda: api.influence(smollm2, "wiki", ["cosine"], "block", samples=2, seq_len=8),
        lambda: api.influence(smollm2, "wiki", ["cosine", "l2"], "block", samples=2, seq_len=8),
        lambda: api.influence(smollm2, "wiki", ["l2", "cosine"], "block", samples=2, seq_len=8),  # same set
        lambda: api.influence(smollm2, "wiki", ["cosine"], "sublayer", samples=2, seq_len=8),
        lambda: api.influence(smollm2, "wiki", ["cosine"], "block", samples=3, seq_len=8),
        lambda: api.influence(smollm2, "wiki", ["cosine"], "block", samples=2, seq_len=9),
        lambda: api.influence(smollm2, "mmlu", ["cosine"], "block", samples=2, seq_len=8),
        lambda: api.influence(smollm2, "wiki", ["cosine"], "block", samples=2, seq_len=8, plan=PruningPlan.parse("0")),
        lambda: api.influence(other_model, "wiki", ["cosine"], "block", samples=2, seq_len=8),
    ]
    for number, variant in enumerate(variants):
        computing_influence = number >= 11
        variant()
    assert keys[0] == keys[1]
    distinct = keys[1:]
    assert keys[9] == keys[8]  # fmt auto == cloze for this model
    assert keys[15] == keys[14]  # metric order does not matter
    unique = set(distinct)
    assert len(unique) == len(distinct) - 2


@pytest.mark.real
def test_two_spellings_of_a_subject_share_one_result_and_label(smollm2, fresh_cache):
    plan = PruningPlan.parse("2.attn")
    typed = api.evaluate(smollm2, plan, "mmlu:abstract_algebra", fmt="letter", per_subject=1)
    listed = api.evaluate(smollm2, plan, "mmlu:abstract algebra", fmt="letter", per_subject=1)
    assert typed.task == listed.task == "mmlu:abstract algebra"
    assert (typed.from_cache, listed.from_cache) == (False, True) and listed.metrics == typed.metrics


@pytest.mark.real
def test_influence_from_the_cache_still_reports_that_it_is_done(smollm2, fresh_cache):
    computed, cached_calls = [], []
    api.influence(smollm2, "wiki", ["cosine"], "block", samples=2, seq_len=16, progress=lambda d, t: computed.append((d, t)))
    api.influence(smollm2, "wiki", ["cosine"], "block", samples=2, seq_len=16, progress=lambda d, t: cached_calls.append((d, t)))
    assert computed and computed[-1][0] == computed[-1][1] != 1
    assert cached_calls == [(1, 1)], "a progress bar waiting on a cached ranking must not stay empty"


@pytest.mark.real
def test_static_influence_on_two_mmlu_subsets_is_computed_for_each(smollm2, fresh_cache):
    def influence(data, calls=None):
        progress = (lambda d, t: calls.append((d, t))) if calls is not None else None
        return api.influence(smollm2, data, ["cosine"], "block", samples=2, seq_len=32, progress=progress)

    stem, humanities = influence("mmlu:STEM"), influence("mmlu:humanities")
    assert set(stem["dataset"]) == {"mmlu:STEM"} and set(humanities["dataset"]) == {"mmlu:humanities"}
    assert not np.allclose(stem["value"], humanities["value"]), "another subset's prompts give other values"
    calls = []
    lower_case = influence("mmlu:stem", calls)
    assert calls == [(1, 1)] and set(lower_case["dataset"]) == {"mmlu:STEM"}, "one subset, two spellings: one entry"
