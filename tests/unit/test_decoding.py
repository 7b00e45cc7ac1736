"""Batched, KV-cached greedy decoding (pruneviz.engine.decoding) against a reference that recomputes the whole
prefix of one prompt at every step, without a cache: token for token, unpruned and under plans that prune
attention (block 0's included, and every block's), MLPs and whole blocks, with a stand-in, with prompts of
different lengths left-padded into one batch, in float32, bfloat16 and float16.

The tiny model's weights are drawn with a large standard deviation (0.3): with the usual 0.02 its continuations
hardly depend on the context (it repeats the last token), and a cache that masks the wrong positions would pass.
"""

from __future__ import annotations

import pytest
import torch
from conftest import byte_tokenizer, tiny_llama
from torch import nn

from pruneviz.core.errors import SettingError
from pruneviz.core.gating import apply_plan
from pruneviz.core.loading import load_model
from pruneviz.core.plan import PruningPlan
from pruneviz.engine.decoding import GenerationRequest, end_token_ids, generate_requests

DTYPES = ["float32", "bfloat16", "float16"]
PLANS = ["", "0.attn", "1.attn,2.mlp", "2", "0.attn,1.attn,2.attn,3.attn"]
LENGTHS = (3, 9, 5, 14)


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory):
    """A model folder like ``tiny_model_dir`` whose matrices are drawn with standard deviation 0.3."""
    directory = tmp_path_factory.mktemp("sharp-model")
    tokenizer = byte_tokenizer()
    model = tiny_llama(vocab_size=len(tokenizer), context=8192)
    model.config.pad_token_id = model.config.eos_token_id = model.config.bos_token_id = 0
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, 0.3)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", params=DTYPES)
def loaded(request, sharp_model_dir):
    return load_model(str(sharp_model_dir), device="cpu", dtype=request.param, self_check=False)


@pytest.fixture(scope="module")
def loaded32(sharp_model_dir):
    return load_model(str(sharp_model_dir), device="cpu", dtype="float32", self_check=False)


def prompts(count: int = len(LENGTHS), seed: int = 1) -> list[tuple[int, ...]]:
    generator = torch.Generator().manual_seed(seed)
    return [tuple(torch.randint(3, 250, (LENGTHS[i % len(LENGTHS)],), generator=generator).tolist()) for i in range(count)]


def recomputed(loaded, ids: tuple[int, ...], max_new_tokens: int) -> tuple[list[int], list[float]]:
    """Greedy tokens of one prompt, recomputing the whole prefix at every step (no cache, no padding), and at every
    step the margin between the best and the second-best logit (how close the choice was to a tie)."""
    ends, tokens, margins = end_token_ids(loaded), list(ids), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            sequence = torch.tensor([tokens])
            logits = loaded.logits(loaded.hidden_states(sequence, torch.ones_like(sequence))[0, -1])
            top = logits.topk(2).values
            margins.append(float(top[0] - top[1]))
            token = int(logits.argmax())
            if token in ends:
                break
            tokens.append(token)
    return tokens[len(ids):], margins


# below float32, a cached step and a recomputed one round differently (other matrix shapes): they may pick different
# tokens where the best two logits are this close (in logits of a few units), and nowhere else
TIE = {torch.float32: 0.0, torch.bfloat16: 0.125, torch.float16: 0.02}


def assert_same_tokens(loaded, batched, requests, steps):
    """Each continuation equals the recomputed one, up to a step where the reference's choice was a near-tie (:data:`TIE`)."""
    for generated, request in zip(batched, requests):
        expected, margins = recomputed(loaded, request.ids, steps)
        got = list(generated.tokens)
        differ = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
        if differ is None:
            assert got == expected
        else:
            assert margins[differ] <= TIE[loaded.dtype], (got, expected, margins[differ])


@pytest.mark.parametrize("prefill_alone", [True, False], ids=["prompts prefilled alone", "padded batch prefilled"])
@pytest.mark.parametrize("plan", PLANS)
def test_cached_batched_decoding_equals_recomputing_each_prompt(loaded, plan, prefill_alone):
    """Both ways to prefill a batch: each prompt alone, its cache rows then left-padded (the CPU's way), and the
    left-padded batch at once (a GPU's)."""
    steps = 6 if loaded.dtype == torch.float16 else 12  # fp16 on a CPU is slow
    requests = [GenerationRequest(ids, steps) for ids in prompts()]
    plan = PruningPlan.parse(plan, loaded.n_blocks)
    with apply_plan(plan):
        batched = generate_requests(loaded, requests, batch_size=4, checkpoint=False, prefill_alone=prefill_alone)
        assert_same_tokens(loaded, batched, requests, steps)
    assert all(g.finish in ("eos", "length") for g in batched)


@pytest.mark.parametrize("plan", ["", "0.attn,2"])
def test_rows_leave_a_batch_prefilled_alone_like_recomputing(loaded, plan):
    """Token limits of 2 to 8: rows leave the merged batch one after another (its cache rows selected) and the
    rest go on as if alone."""
    limits = (2, 8, 4, 6)
    requests = [GenerationRequest(ids, limit) for ids, limit in zip(prompts(), limits)]
    with apply_plan(PruningPlan.parse(plan, loaded.n_blocks)):
        batched = generate_requests(loaded, requests, batch_size=4, checkpoint=False, prefill_alone=True)
        for generated, request in zip(batched, requests):
            assert_same_tokens(loaded, [generated], [request], request.max_new_tokens)
    assert [len(g.tokens) for g in batched if g.finish == "length"] == [r.max_new_tokens for r, g in zip(requests, batched)
                                                                          if g.finish == "length"]


def test_prompts_prefilled_alone_run_no_pad_token(loaded32, monkeypatch):
    """On a CPU (the default there) each prompt's prefill sees its own tokens only; a GPU's padded batch sees the
    longest prompt's length in every row."""
    seen = []
    decoder = type(loaded32.model.model)
    forward = decoder.forward

    def recording(self, input_ids=None, **kwargs):
        seen.append(tuple(input_ids.shape))
        return forward(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(decoder, "forward", recording)
    requests = [GenerationRequest(ids, 2) for ids in prompts()]
    assert loaded32.device.type == "cpu"
    alone = generate_requests(loaded32, requests, batch_size=4, checkpoint=False)
    prefills, seen[:] = [shape for shape in seen if shape[1] > 1], []
    assert sorted(prefills) == sorted((1, length) for length in LENGTHS)
    padded = generate_requests(loaded32, requests, batch_size=4, checkpoint=False, prefill_alone=False)
    assert [shape for shape in seen if shape[1] > 1] == [(4, max(LENGTHS))]
    assert alone == padded


def test_a_stand_in_decodes_like_recomputing(loaded):
    torch.manual_seed(3)
    stand_in = nn.Linear(loaded.info.hidden_size, loaded.info.hidden_size).to(loaded.dtype)
    plan, stand_ins = PruningPlan.parse("0.attn,2", loaded.n_blocks), {(0, "attn"): stand_in, (2, "attn"): stand_in}
    requests = [GenerationRequest(ids, 6) for ids in prompts()]
    with apply_plan(plan, stand_ins):
        batched = generate_requests(loaded, requests, batch_size=4, checkpoint=False)
        assert_same_tokens(loaded, batched, requests, 6)


def test_batches_of_one_equal_one_batch_and_a_plan_changes_the_output(loaded32):
    loaded = loaded32
    requests = [GenerationRequest(ids, 10) for ids in prompts(6, seed=2)]
    together = generate_requests(loaded, requests, batch_size=6, checkpoint=False)
    alone = generate_requests(loaded, requests, batch_size=1, checkpoint=False)
    assert together == alone
    with apply_plan(PruningPlan.parse("0,1", loaded.n_blocks)):
        pruned = generate_requests(loaded, requests, batch_size=6, checkpoint=False)
    assert pruned != together


def test_stop_sequences_and_limits(loaded32):
    loaded = loaded32
    runs = [(ids, generate_requests(loaded, [GenerationRequest(ids, 8)], checkpoint=False)[0]) for ids in prompts(8)]
    ids, free = next((ids, run) for ids, run in runs if run.finish == "length")
    assert len(free.tokens) == 8
    stop = free.text[2:4]
    stopped = generate_requests(loaded, [GenerationRequest(ids, 8, (stop,))], checkpoint=False)[0]
    assert stopped.finish == "stop" and stopped.text == free.text[: free.text.find(stop)]
    assert stopped.tokens == free.tokens[: len(stopped.tokens)]


def test_checkpoints_are_reused(loaded32, fresh_cache):
    loaded = loaded32
    requests = [GenerationRequest(ids, 5) for ids in prompts()]
    first = generate_requests(loaded, requests, batch_size=2)
    resumed = [0]
    assert generate_requests(loaded, requests, batch_size=2, resumed=resumed) == first
    assert resumed == [len(requests)]


@pytest.mark.parametrize("bad", [GenerationRequest((5,), 0), GenerationRequest((), 3), GenerationRequest((5,) * 8190, 10)])
def test_bad_requests_are_one_sentence(loaded32, bad):
    with pytest.raises(SettingError):
        generate_requests(loaded32, [bad], checkpoint=False)


def sliding_model(family: str):
    """A tiny Gemma-3 (sliding and full attention layers alternating) or Qwen2 (sliding from layer 1) whose window of
    4 tokens is shorter than the prompts, with :func:`conftest.byte_tokenizer`."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, Qwen2Config

    from pruneviz.core.loading import from_modules

    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, sliding_window=4, max_position_embeddings=256, initializer_range=0.3,
                  pad_token_id=0, eos_token_id=0, bos_token_id=0)
    if family == "gemma3":
        config = Gemma3TextConfig(**common, head_dim=8, query_pre_attn_scalar=8,
                                  layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])
    else:
        config = Qwen2Config(**common, use_sliding_window=True, max_window_layers=1)
    return from_modules(family, AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval(), tokenizer)


@pytest.mark.parametrize("family", ["gemma3", "qwen2"])
def test_sliding_window_layers_decode_like_recomputing(family):
    """Pruning the first sliding or the first full-attention layer, or every layer of one kind: the cache reads its
    lengths and mask sizes from a kept layer of the same kind, beyond the window too."""
    loaded = sliding_model(family)
    requests = [GenerationRequest(ids, 10) for ids in prompts()]
    for plan in ("", "0.attn", "1.attn", "0.attn,2.attn", "1.attn,3.attn", "1.attn,2.attn,3.attn"):
        with apply_plan(PruningPlan.parse(plan, loaded.n_blocks)):
            batched = generate_requests(loaded, requests, batch_size=4, checkpoint=False)
            assert_same_tokens(loaded, batched, requests, 10)
