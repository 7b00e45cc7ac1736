"""The incremental evaluation engine on a tiny model: stored block-boundary states, packing, stratified
progressive scoring, per-batch checkpoints. Every path must give the plain path's numbers."""

from __future__ import annotations

import dataclasses
import random
import threading
from types import SimpleNamespace

import pytest
import torch
from helpers import plain_logprobs

from pruneviz.core.errors import Cancelled, SettingError
from pruneviz.core.gating import apply_plan
from pruneviz.core.plan import PruningPlan
from pruneviz.engine import scoring
from pruneviz.engine.hidden_store import HiddenStateStore
from pruneviz.engine.incremental import counting_blocks, decoder_states, using_store
from pruneviz.engine.scoring import Request, score_requests, stratified_schedule
from pruneviz.studies.recovery import StandIn


@pytest.fixture(scope="module")
def tiny_tok(tiny):
    """The tiny Llama with a stand-in tokenizer that only provides the pad id."""
    return dataclasses.replace(tiny, tokenizer=SimpleNamespace(pad_token_id=0))


def _requests(seed: int = 0, n: int = 9) -> list[Request]:
    """Letter-like requests: groups of three share a 6-token prefix; every request reads its last position."""
    rng = random.Random(seed)
    requests = []
    for group in range(n // 3):
        prefix = tuple(rng.randrange(3, 128) for _ in range(6))
        for _ in range(3):
            tokens = prefix + tuple(rng.randrange(3, 128) for _ in range(rng.randrange(1, 9)))
            requests.append(Request(tokens, (len(tokens) - 1,), ((5, 6, 7, 8),), group=group, stratum=f"s{group}"))
    return requests


def _assert_same(ours, reference, atol=1e-5):
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


PLANS = ["", "3.attn", "3.attn,2.mlp", "1", "0.mlp,3", "3.attn"]


def test_toggles_reuse_stored_boundaries_and_equal_the_plain_path(tiny_tok):
    requests = _requests()
    store = HiddenStateStore(cpu_bytes=64 * 2**20)
    spent = []
    with using_store(store):
        for plan_text in PLANS:
            plan = PruningPlan.parse(plan_text)
            with counting_blocks() as work, apply_plan(plan):
                ours = score_requests(tiny_tok, requests, batch_size=2, checkpoint=False)
            _assert_same(ours, plain_logprobs(tiny_tok, requests, plan))
            spent.append((work.computed, work.reused))
    batches = spent[0][0] // 4
    assert batches >= 2 and spent[0] == (4 * batches, 0)
    # per batch: the blocks after the deepest stored boundary state that agrees with the plan
    assert spent[1:] == [
        (1 * batches, 3 * batches),  # 3.attn: the unpruned model's blocks 0-2 reused
        (2 * batches, 2 * batches),  # 3.attn,2.mlp: agrees with the unpruned model before block 2
        (3 * batches, 1 * batches),  # 1
        (4 * batches, 0),  # 0.mlp,3: changes block 0
        (0, 4 * batches),  # 3.attn again: its final state is stored
    ]
    assert store.usage()["entries"] > 0


def test_repeated_plan_recomputes_no_block_and_is_bit_identical(tiny_tok):
    requests = _requests(seed=1)
    store = HiddenStateStore(cpu_bytes=64 * 2**20)
    plan = PruningPlan.parse("2.mlp")
    with using_store(store), apply_plan(plan):
        first = score_requests(tiny_tok, requests, checkpoint=False)
        with counting_blocks() as work:
            again = score_requests(tiny_tok, requests, checkpoint=False)
    assert work.computed == 0 and work.reused > 0
    for a, b in zip(first, again):
        assert torch.equal(a, b)


def test_store_too_small_still_gives_the_right_answer(tiny_tok):
    requests = _requests(seed=2)
    store = HiddenStateStore(cpu_bytes=2048)  # holds at most a few boundary states
    for plan_text in PLANS:
        plan = PruningPlan.parse(plan_text)
        with using_store(store), apply_plan(plan):
            ours = score_requests(tiny_tok, requests, batch_size=3, checkpoint=False)
        _assert_same(ours, plain_logprobs(tiny_tok, requests, plan))
    assert store.usage()["cpu"] <= 2048


def test_stand_ins_are_part_of_the_key(tiny_tok):
    requests = _requests(seed=3)
    plan = PruningPlan.parse("1.attn")
    first, second = StandIn("bias", 32), StandIn("bias", 32)
    with torch.no_grad():
        first.bias.fill_(0.5)
        second.bias.fill_(-0.5)
    store = HiddenStateStore(cpu_bytes=64 * 2**20)
    with using_store(store):
        for stand_in in (first, second, first):
            stand_ins = {(1, "attn"): stand_in}
            with apply_plan(plan, stand_ins):
                ours = score_requests(tiny_tok, requests, checkpoint=False)
            _assert_same(ours, plain_logprobs(tiny_tok, requests, plan, stand_ins))
        # a plain callable cannot be hashed: the engine runs every block
        with apply_plan(plan, {(1, "attn"): lambda x: torch.zeros_like(x)}), counting_blocks() as work:
            score_requests(tiny_tok, requests, checkpoint=False)
    assert work.reused == 0 and work.computed > 0


def test_batch_size_and_token_budget_do_not_change_results(tiny_tok):
    requests = _requests(seed=4, n=12)
    reference = plain_logprobs(tiny_tok, requests, PruningPlan())
    with using_store(None):
        for batch_size in (1, 7, 32):
            for budget in (16, 8192):
                ours = score_requests(tiny_tok, requests, batch_size=batch_size, max_batch_tokens=budget, checkpoint=False)
                _assert_same(ours, reference)
                assert all(torch.isfinite(s).all() for s in ours)


def test_stratified_schedule_deals_strata_round_robin_in_growing_chunks():
    lengths = [10, 50, 20, 40, 30, 60, 70, 5]
    strata = ["a", "a", "a", "a", "b", "b", "c", "c"]
    chunks = stratified_schedule(lengths, strata, batch_size=2, max_batch_tokens=100)
    order = [row for chunk in chunks for batch in chunk for row in batch]
    assert sorted(order) == list(range(8))
    # chunk token budgets 100, 200, 400: the dealt order is a round robin over the (shuffled) strata
    tokens = [sum(lengths[r] for batch in chunk for r in batch) for chunk in chunks]
    assert all(t <= 100 * 2**c for c, t in enumerate(tokens)) and len(chunks) >= 2
    first_two = [row for chunk in chunks[:2] for batch in chunk for row in batch]
    assert {strata[row] for row in first_two} == {"a", "b", "c"}
    for chunk in chunks:
        for batch in chunk:
            assert len(batch) <= 2 and (len(batch) == 1 or len(batch) * lengths[batch[0]] <= 100)
            assert [lengths[r] for r in batch] == sorted((lengths[r] for r in batch), reverse=True)
    # a row longer than the budget still gets a chunk of its own
    assert stratified_schedule([500, 10], ["a", "b"], 4, 100)[0] in ([[0]], [[1]])


def test_cancelled_scoring_resumes_from_checkpointed_batches(tiny_tok, monkeypatch):
    requests = _requests(seed=5, n=12)
    computed = []
    original = scoring._score_batch

    def counting(loaded, tokens, reqs, rows, reference_kl=False):
        computed.append(len(rows))
        return original(loaded, tokens, reqs, rows, reference_kl)

    monkeypatch.setattr(scoring, "_score_batch", counting)

    def cancel_after_two(done, total):
        if len(computed) == 2:
            raise Cancelled("stop")

    plan = PruningPlan.parse("2.attn")
    with using_store(None), apply_plan(plan):
        with pytest.raises(Cancelled):
            score_requests(tiny_tok, requests, batch_size=1, progress=cancel_after_two)
        assert len(computed) == 2
        resumed = score_requests(tiny_tok, requests, batch_size=1)
    rows = len(computed) - 2
    assert rows == 2  # four rows in all: two were cached before the cancel
    _assert_same(resumed, plain_logprobs(tiny_tok, requests, plan))
    with using_store(None), apply_plan(PruningPlan.parse("2.mlp")):
        score_requests(tiny_tok, requests, batch_size=1)
    assert len(computed) == 8  # another plan shares no checkpoint


def test_out_of_memory_splits_the_batch_then_says_what_to_do(tiny_tok, monkeypatch):
    requests = _requests(seed=7)
    original = scoring._score_batch
    sizes = []

    def limited(loaded, tokens, reqs, rows, reference_kl=False):
        sizes.append(len(rows))
        if len(rows) > 1:
            raise torch.OutOfMemoryError("fake: more than one row")
        return original(loaded, tokens, reqs, rows, reference_kl)

    monkeypatch.setattr(scoring, "_score_batch", limited)
    with using_store(None):
        ours = score_requests(tiny_tok, requests, batch_size=3, checkpoint=False)
    _assert_same(ours, plain_logprobs(tiny_tok, requests, PruningPlan()))
    assert sizes[0] == 3 and 1 in sizes

    def never(loaded, tokens, reqs, rows, reference_kl=False):
        raise torch.OutOfMemoryError("fake: always")

    monkeypatch.setattr(scoring, "_score_batch", never)
    with pytest.raises(SettingError, match="Out of memory even with a batch of one"):
        score_requests(tiny_tok, requests, batch_size=2, checkpoint=False)


def test_concurrent_plans_share_one_store_and_get_their_own_answers(tiny_tok):
    requests = _requests(seed=6)
    plans = [PruningPlan.parse(p) for p in ("", "3.attn", "1", "2.mlp,3.attn")]
    serial = {str(p): plain_logprobs(tiny_tok, requests, p) for p in plans}
    store = HiddenStateStore(cpu_bytes=64 * 2**20)
    failures = []

    def work(plan):
        try:
            with using_store(store), apply_plan(plan):
                for _ in range(3):
                    _assert_same(score_requests(tiny_tok, requests, batch_size=2, checkpoint=False), serial[str(plan)])
        except AssertionError as error:  # collected: an exception in a thread would not fail the test
            failures.append(error)

    threads = [threading.Thread(target=work, args=(p,)) for p in plans * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_decoder_states_with_store_equal_hidden_states(tiny_tok):
    ids = torch.randint(3, 128, (2, 7))
    mask = torch.ones_like(ids)
    store = HiddenStateStore(cpu_bytes=2**20)
    with using_store(store), apply_plan(PruningPlan()):
        decoder_states(tiny_tok, ids, mask)
    with using_store(store), apply_plan(PruningPlan.parse("2")), counting_blocks() as work:
        ours = decoder_states(tiny_tok, ids, mask)
    with apply_plan(PruningPlan.parse("2")), torch.no_grad():
        expected = tiny_tok.hidden_states(ids, mask)
    assert work.computed == 2 and work.reused == 2
    assert torch.equal(ours, expected)
