"""One computation per result in a process (``core.inflight`` through ``cached_call``) and the unpruned baseline
computed in the background when a model loads (``evaluation.background``)."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch

from pruneviz import api
from pruneviz.core import cache, inflight
from pruneviz.core.errors import Cancelled
from pruneviz.core.loading import load_model
from pruneviz.core.plan import PruningPlan
from pruneviz.evaluation import background

DTYPES = ("float32", "bfloat16", "float16")
WIKI = {"task": "wiki", "windows": 4, "seq_len": 32}


def slow_square(x: int, progress=None, partial=None, gate: threading.Event | None = None, calls: list | None = None) -> int:
    """x², reporting progress 1/2 and a provisional value, then waiting for ``gate`` before finishing."""
    calls.append(x)
    progress(1, 2)
    partial(-1)
    gate.wait(10)
    progress(2, 2)
    return x * x


def in_thread(function, *args, **kwargs) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["value"] = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            out["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_second_caller_waits_for_the_running_computation_and_hears_its_callbacks(fresh_cache):
    gate, calls, heard = threading.Event(), [], {"progress": [], "partial": []}
    ignore = ("progress", "partial", "gate", "calls")
    leader, led = in_thread(cache.cached_call, slow_square, (7,), {"gate": gate, "calls": calls}, ignore=ignore)
    wait_until(lambda: calls)
    waiter, waited = in_thread(
        cache.cached_call, slow_square, (7,),
        {"gate": gate, "calls": calls, "progress": lambda *a: heard["progress"].append(a), "partial": heard["partial"].append},
        ignore=ignore,
    )
    wait_until(lambda: heard["partial"])  # the waiter hears the leader's provisional value while it waits
    assert heard["progress"][-1] == (1, 2) and heard["partial"][-1] == -1
    gate.set()
    leader.join(10), waiter.join(10)
    assert led["value"] == (49, False) and waited["value"] == (49, True)
    assert calls == [7], "computed once"
    assert inflight.running_keys() == []


def test_a_waiter_gets_the_leaders_value_even_when_the_cache_cannot_store_it(fresh_cache, monkeypatch):
    """Session 8 left this: with the cache's disk full nothing was stored to wake up to, so each waiter computed
    again, one after another. The value is handed over in the flight, each caller with its own copy."""
    monkeypatch.setattr(cache, "_write", lambda key, value: None)  # a full disk: warned about, nothing stored

    def slow_table(x: int, progress=None, gate=None, calls=None) -> dict:
        calls.append(x)
        progress(1, 2)
        gate.wait(10)
        return {"x": x, "notes": []}

    gate, calls = threading.Event(), []
    ignore = ("progress", "gate", "calls")
    leader, led = in_thread(cache.cached_call, slow_table, (4,), {"gate": gate, "calls": calls}, ignore=ignore)
    wait_until(lambda: calls)
    waiter, waited = in_thread(cache.cached_call, slow_table, (4,), {"gate": gate, "calls": calls}, ignore=ignore)
    time.sleep(0.5)  # the waiter is waiting by now (it polls every 0.2 s)
    gate.set()
    leader.join(10), waiter.join(10)
    assert calls == [4], "computed once although nothing could be stored"
    assert led["value"] == ({"x": 4, "notes": []}, False) and waited["value"] == ({"x": 4, "notes": []}, True)
    led["value"][0]["notes"].append("the leader's caller annotates its result")
    assert waited["value"][0]["notes"] == [], "each caller has its own copy"


def test_a_waiter_that_cancels_stops_waiting_and_the_computation_goes_on(fresh_cache):
    gate, calls = threading.Event(), []
    ignore = ("progress", "partial", "gate", "calls")
    leader, led = in_thread(cache.cached_call, slow_square, (3,), {"gate": gate, "calls": calls}, ignore=ignore)
    wait_until(lambda: calls)

    def cancel(done, total):
        raise Cancelled("stop waiting")

    with pytest.raises(Cancelled):
        cache.cached_call(slow_square, (3,), {"gate": gate, "calls": calls, "progress": cancel}, ignore=ignore)
    assert leader.is_alive(), "the computation goes on for whoever else waits or asks later"
    gate.set()
    leader.join(10)
    assert led["value"] == (9, False)
    assert cache.cached_call(slow_square, (3,), {"gate": gate, "calls": calls}, ignore=ignore) == (9, True)


def test_when_the_leader_fails_a_waiter_computes_it_itself(fresh_cache):
    started, release, attempts = threading.Event(), threading.Event(), []

    def flaky(x: int) -> int:
        attempts.append(threading.get_ident())
        if len(attempts) == 1:
            started.set()
            release.wait(10)
            raise RuntimeError("the first attempt fails")
        return x + 1

    leader, led = in_thread(cache.cached_call, flaky, (1,))
    started.wait(10)
    waiter, waited = in_thread(cache.cached_call, flaky, (1,))
    time.sleep(0.5)  # the waiter is waiting by now (it polls every 0.2 s)
    release.set()
    leader.join(10), waiter.join(10)
    assert isinstance(led["error"], RuntimeError)
    assert waited["value"] == (2, False) and len(attempts) == 2 and attempts[0] != attempts[1]


def test_a_recursive_call_of_the_same_key_computes_instead_of_waiting_for_itself(fresh_cache):
    def outer(depth: int) -> int:
        if depth == 0:
            return 0
        # the same function and arguments but depth: a different key; same key below
        return 1 + cache.cached_call(outer, (depth - 1,))[0]

    assert cache.cached_call(outer, (3,)) == (3, False)
    # the same key from the same thread while leading it (what a callback could do): computed, not deadlocked
    key = cache.call_key(outer, (5,))
    with inflight.lead_or_wait(key, {}) as flight:
        with inflight.lead_or_wait(key, {}) as again:
            assert again is not None and again is not flight


@pytest.fixture
def tiny_loaded(tiny_model_dir, without_self_check):
    return {dtype: load_model(str(tiny_model_dir), device="cpu", dtype=dtype) for dtype in DTYPES}


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_background_baseline_is_the_unpruned_evaluation_and_a_later_evaluate_reads_it(fresh_cache, tiny_loaded, dtype):
    loaded = tiny_loaded[dtype]
    (job,) = background.start_baselines(loaded, [WIKI])
    assert background.start_baselines(loaded, [WIKI])[0] is job, "asking again finds the same job"
    result = job.future.result(timeout=120)
    expected = api.evaluate(loaded, PruningPlan(), use_cache=False, **WIKI)
    assert result.metrics["perplexity"] == pytest.approx(expected.metrics["perplexity"], rel=1e-6)
    assert math.isfinite(result.stderr["perplexity"]) and result.n == 4
    again = api.evaluate(loaded, PruningPlan(), **WIKI)
    assert again.from_cache and again.metrics == result.metrics
    background.cancel_baselines()


def test_loading_another_model_cancels_the_previous_models_baselines(fresh_cache, tiny_loaded):
    first, second = tiny_loaded["float32"], tiny_loaded["bfloat16"]
    assert first.fingerprint != second.fingerprint
    gate = threading.Event()
    blocker = background._executor.submit(gate.wait, 10)  # holds the one worker: the jobs below queue behind it
    (old,) = background.start_baselines(first, [WIKI])
    (new,) = background.start_baselines(second, [WIKI])
    gate.set()
    blocker.result(10)
    assert old.cancel.is_set() and old.future.cancelled(), "a queued job of the previous model never starts"
    assert new.future.result(timeout=120).n == 4
    background.cancel_baselines()


def test_perplexity_reports_provisional_results_before_it_finishes(fresh_cache, tiny_loaded):
    seen = []
    final = api.evaluate(tiny_loaded["float32"], PruningPlan.parse("1.attn"), windows=16, seq_len=64, use_cache=False,
                         partial=seen.append)
    assert seen and all(0 < r.n < 16 for r in seen)
    first = seen[0]
    # a provisional value is the same computation on the windows finished so far, each row under its window's number
    assert first.items["nll_sum"].tolist() == pytest.approx(final.items.loc[first.items.index, "nll_sum"].tolist(), rel=1e-6)
    assert list(final.items.index) == list(range(16)) and final.items.index.name == "window"
    assert all(set(r.items.index) <= set(range(16)) and len(set(r.items.index)) == r.n for r in seen)
    assert torch.isfinite(torch.tensor(first.metrics["perplexity"]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_wiki_kl_is_the_divergence_of_the_pruned_next_token_distribution_from_the_unpruned_one(fresh_cache, tiny_loaded, dtype):
    from reference import forward_by_hand

    from pruneviz.evaluation.perplexity import perplexity_windows

    loaded = tiny_loaded[dtype]
    plan = PruningPlan.parse("1.attn,2.mlp")
    api.evaluate(loaded, PruningPlan(), **WIKI)  # the baseline first, as the app does: its states are reused
    result = api.evaluate(loaded, plan, **WIKI)
    _, ids = perplexity_windows(loaded, "wiki", WIKI["windows"], WIKI["seq_len"])
    with torch.no_grad():
        unpruned = torch.log_softmax(forward_by_hand(loaded.model, ids)[:, :-1].double(), -1)
        pruned = torch.log_softmax(forward_by_hand(loaded.model, ids, skip=set(plan.pruned))[:, :-1].double(), -1)
    per_window = (unpruned.exp() * (unpruned - pruned)).sum(-1).mean(-1)  # [windows], nats per token
    tolerance = {"float32": 1e-4, "bfloat16": 0.05, "float16": 0.02}[dtype]
    assert result.metrics["kl"] == pytest.approx(float(per_window.mean()), rel=tolerance, abs=1e-6)
    assert result.stderr["kl"] == pytest.approx(float(per_window.std() / math.sqrt(len(per_window))), rel=10 * tolerance, abs=1e-6)
    assert result.metrics["kl"] > 0
    assert "kl" not in api.evaluate(loaded, PruningPlan(), **WIKI).metrics, "the unpruned model is not compared with itself"
    assert "kl" not in api.evaluate(loaded, plan, compare=False, **WIKI).metrics


def test_the_default_evaluation_set_has_signal_on_a_capable_model_and_fits_a_small_one():
    from pruneviz.evaluation.evaluation_set import default_evaluation_set

    wiki, mmlu = default_evaluation_set(1_540_000_000)  # qwen2.5-coder-1.5b: letter format, 5 per subject = 285 questions
    assert wiki == {"task": "wiki", "windows": 8, "seq_len": 128}
    assert mmlu == {"task": "mmlu", "fmt": "letter", "shots": 0, "per_subject": 5}
    assert 1.96 * math.sqrt(0.5 * 0.5 / (57 * 5)) < 0.06  # a 95 % CI of under ± 6 pp at 50 % accuracy
    _, small = default_evaluation_set(135_000_000)  # smollm2: cloze format (at chance in letter), 2 per subject
    assert small["fmt"] == "cloze" and small["per_subject"] == 2
    assert default_evaluation_set(135_000_000, per_subject=1)[1]["per_subject"] == 1
