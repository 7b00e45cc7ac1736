"""Models sharded by accelerate (``device_map``): every computation equals the whole model's.

There is no GPU here, so the sharded models offload blocks to disk: accelerate's ``AlignDevicesHook``
then loads each offloaded block's weights in its pre-forward hook, and the hooks really sit in the path
of every computation. A tiny Llama with a small trained BPE tokenizer runs these tests; the embedded
SmolLM2 runs in ``tests/real/test_sharded_real.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from conftest import tiny_llama

from pruneviz import api
from pruneviz.core.errors import ModelLoadError
from pruneviz.core.gating import apply_plan, record_residuals
from pruneviz.core.loading import from_modules, load_model, parse_max_memory
from pruneviz.core.plan import PruningPlan, units_of
from pruneviz.engine.hidden_store import HiddenStateStore
from pruneviz.engine.incremental import decoder_states, using_store
from pruneviz.evaluation import lm_eval_backend
from pruneviz.influence.objectives import objective_data
from pruneviz.influence.shapley import adaptive_influence
from pruneviz.studies.export import export_model, load_exported
from pruneviz.studies.generation import generate_greedy
from pruneviz.studies.recovery import fit_recovery

# blocks 1 and 3 on disk, the rest in CPU memory
EXPLICIT_MAP = {
    "model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
    "model.layers.2": "cpu", "model.layers.3": "disk", "model.norm": "cpu", "lm_head": "cpu",
}
PLANS = ["", "1.attn", "0.mlp,3", "1,2.attn"]


def small_tokenizer():
    """A byte-level BPE tokenizer (400 tokens) trained on Wikipedia leads, encoding " A".." D" as single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from pruneviz.data.text import load_corpus

    texts = list(load_corpus("wiki", "calibration").texts[:200]) + ["Answer: A B C D"] * 50
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>")


def gate_inside_hook(module) -> bool:
    """Whether ``module``'s forward is accelerate's device hook and the hook calls the plan gate.

    Modules without weights of their own (attention, MLP containers) get no hook; their gate is then
    their forward itself, called inside their block's hook.
    """
    inner = module._old_forward if hasattr(module, "_hf_hook") else module.forward
    outer_is_hook = isinstance(module.forward, functools.partial) or not hasattr(module, "_hf_hook")
    return outer_is_hook and inner.__code__.co_filename.endswith("gating.py")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A saved 4-block tiny Llama (safetensors) with its tokenizer."""
    directory = tmp_path_factory.mktemp("tiny-sharded") / "model"
    tokenizer = small_tokenizer()
    model = tiny_llama(vocab_size=len(tokenizer), seed=5)
    # the byte-level tokenizer makes MMLU prompts of up to ~300 tokens; rotary embeddings need no table resize
    model.config.max_position_embeddings = 1024
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def whole(tiny_dir):
    return load_model(str(tiny_dir), device="cpu", dtype="float32", self_check=False)


@pytest.fixture(scope="module")
def sharded(tiny_dir, tmp_path_factory):
    return load_model(str(tiny_dir), dtype="float32", device_map=EXPLICIT_MAP, offload_folder=tmp_path_factory.mktemp("offload"), self_check=False)


def test_sharded_model_is_offloaded_with_gates_inside_the_hooks(sharded, whole):
    assert sharded.sharded and not whole.sharded
    assert sharded.device_map == EXPLICIT_MAP and sharded.device == torch.device("cpu")
    assert sharded.fingerprint == whole.fingerprint
    blocks = sharded.adapter.blocks(sharded.model)
    # offloaded weights wait on the meta device until their block's hook loads them
    assert blocks[1].self_attn.q_proj.weight.is_meta and not blocks[0].self_attn.q_proj.weight.is_meta
    for block in blocks:
        assert gate_inside_hook(block) and gate_inside_hook(block.self_attn) and gate_inside_hook(block.mlp)


@pytest.mark.parametrize("plan", PLANS)
def test_hidden_states_and_prefix_runner_equal_the_whole_model(sharded, whole, plan):
    ids = torch.randint(3, 400, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    plan = PruningPlan.parse(plan)
    with torch.no_grad(), apply_plan(plan):
        expected = whole.hidden_states(ids, mask)
        got = sharded.hidden_states(ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], rtol=0, atol=1e-5)
    with torch.no_grad(), using_store(HiddenStateStore()):
        with apply_plan(PruningPlan()):
            decoder_states(sharded, ids, mask)  # the unpruned states, from which the plan resumes
        with apply_plan(plan):
            resumed = decoder_states(sharded, ids, mask)
    torch.testing.assert_close(resumed[real], expected[real], rtol=0, atol=1e-5)


def test_recorded_residuals_equal_the_whole_model(sharded, whole):
    ids = torch.randint(3, 400, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    seen = {}
    for loaded in (whole, sharded):
        store = seen.setdefault(loaded.device_map is None, {})
        with torch.no_grad(), apply_plan(PruningPlan.parse("2.attn")), record_residuals(lambda l, n, t, s=store: s.__setitem__((l, n), t.clone())):
            loaded.hidden_states(ids, mask)
    assert seen[True].keys() == seen[False].keys() and len(seen[True]) == 4 * 3
    for key, tensor in seen[True].items():
        torch.testing.assert_close(seen[False][key], tensor, rtol=0, atol=1e-5)


def test_evaluations_equal_the_whole_model(sharded, whole):
    plan = PruningPlan.parse("1.attn,3.mlp")
    for task, options in [("wiki", {"windows": 2, "seq_len": 32}), ("mmlu:high school biology", {"fmt": "letter", "per_subject": 3})]:
        expected = api.evaluate(whole, plan, task, use_cache=False, **options)
        got = api.evaluate(sharded, plan, task, use_cache=False, **options)
        assert got.n == expected.n > 0
        for metric, value in expected.metrics.items():
            assert got.metrics[metric] == pytest.approx(value, rel=1e-5, abs=1e-5), (task, metric)


def test_static_metrics_and_loo_shapley_equal_the_whole_model(sharded, whole):
    options = dict(samples=3, seq_len=24, use_cache=False)
    static = [api.influence(m, "wiki", ["cosine", "rel_l2"], "sublayer", **options) for m in (whole, sharded)]
    np.testing.assert_allclose(static[1]["value"], static[0]["value"], rtol=0, atol=1e-5)
    data = objective_data(whole, "wiki", samples=3, seq_len=24)
    loo = [adaptive_influence(m, data, units_of(4, "sublayer"), "loss", "loo") for m in (whole, sharded)]
    np.testing.assert_allclose(loo[1].table["value"], loo[0].table["value"], rtol=0, atol=1e-5)
    assert loo[1].count == loo[0].count


def test_recovery_stand_ins_on_a_sharded_model(sharded, whole):
    plan = PruningPlan.parse("1,2.mlp")
    batch, _, _ = api.calibration_batch(whole, "wiki", 4, 24)
    fitted = [fit_recovery(m, plan, batch, "lowrank", rank=2) for m in (whole, sharded)]
    for slot, stand_in in fitted[0].stand_ins.items():
        for name, tensor in stand_in.state_dict().items():
            torch.testing.assert_close(fitted[1].stand_ins[slot].state_dict()[name], tensor, rtol=1e-4, atol=1e-5)
    results = [api.evaluate(m, plan, "wiki", windows=2, seq_len=32, recovery=r, use_cache=False) for m, r in zip((whole, sharded), fitted)]
    assert results[1].metrics["perplexity"] == pytest.approx(results[0].metrics["perplexity"], rel=1e-5)
    pruned = api.evaluate(whole, plan, "wiki", windows=2, seq_len=32, use_cache=False)
    # the stand-ins act: the recovered model differs from the plainly pruned one
    assert results[1].metrics["perplexity"] != pytest.approx(pruned.metrics["perplexity"], rel=1e-6)


def test_lm_eval_backend_generation_and_export_on_a_sharded_model(sharded, whole, tmp_path):
    plan = PruningPlan.parse("1.attn,3.mlp")
    for evaluate, args in [(lm_eval_backend.evaluate_perplexity, ("wiki", 2, 32)),
                           (lm_eval_backend.evaluate_mmlu, ("high school biology", "letter", 0, 3))]:
        expected, got = (evaluate(m, plan, *args).metrics for m in (whole, sharded))
        assert got == pytest.approx(expected, rel=1e-5)
    generated = [generate_greedy(m, "The history of", plan, max_new_tokens=6) for m in (whole, sharded)]
    assert generated[1].new_tokens == 6 and generated[1].text == generated[0].text
    # offloaded weights sit on the meta device between forward passes; an export reads them back
    for exported in (PruningPlan.parse("1,2"), plan):
        directory = tmp_path / str(exported).replace(",", "_")
        assert export_model(sharded, exported, directory).standalone == (exported.units()[0].sublayer is None)
        reloaded, pending, _ = load_exported(directory, device="cpu", dtype="float32")
        options = dict(windows=2, seq_len=32, use_cache=False)
        assert api.evaluate(reloaded, pending, "wiki", **options).metrics["perplexity"] == pytest.approx(
            api.evaluate(whole, exported, "wiki", **options).metrics["perplexity"], rel=1e-5
        )


def test_gates_installed_before_dispatch_act_the_same(tiny_dir, whole, tmp_path):
    """Gates first, then accelerate's hooks (dispatch_model) = hooks first, then gates (load_model)."""
    from accelerate import dispatch_model
    from transformers import AutoModelForCausalLM

    gated_first = from_modules("gates-first", AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32), whole.tokenizer)
    dispatch_model(gated_first.model, EXPLICIT_MAP, main_device="cpu", offload_dir=str(tmp_path))
    blocks = gated_first.adapter.blocks(gated_first.model)
    assert blocks[3].mlp.down_proj.weight.is_meta and gate_inside_hook(blocks[3]) and gate_inside_hook(blocks[3].mlp)
    ids = torch.randint(3, 400, (2, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    for plan in PLANS:
        with torch.no_grad(), apply_plan(PruningPlan.parse(plan)):
            torch.testing.assert_close(gated_first.hidden_states(ids, mask), whole.hidden_states(ids, mask), rtol=0, atol=1e-5)
    # a model already dispatched is fingerprinted by its weights, read back from the offload
    assert from_modules("again", gated_first.model, whole.tokenizer).fingerprint == gated_first.fingerprint


def test_auto_device_map_with_a_memory_limit_offloads_to_disk(tiny_dir, whole, tmp_path):
    limited = load_model(str(tiny_dir), dtype="float32", device_map="auto", max_memory={"cpu": 60_000}, offload_folder=tmp_path, self_check=False)
    assert "disk" in set(limited.device_map.values()) and limited.device == torch.device("cpu")
    ids = torch.randint(3, 400, (2, 10), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    with torch.no_grad(), apply_plan(PruningPlan.parse("0.attn")):
        torch.testing.assert_close(limited.hidden_states(ids, mask), whole.hidden_states(ids, mask), rtol=0, atol=1e-5)


def test_parse_max_memory():
    assert parse_max_memory("0=20GiB, 1=18GiB,cpu=60GiB") == {0: "20GiB", 1: "18GiB", "cpu": "60GiB"}
    assert parse_max_memory("cpu=1000000") == {"cpu": 1_000_000}
    for text, fragment in [("gpu0=20GiB", "Cannot read the memory limit"), ("0=twenty", "Cannot read the size"),
                           ("0:20GiB", "Cannot read the memory limit"), (" , ", "empty")]:
        with pytest.raises(ModelLoadError, match=fragment):
            parse_max_memory(text)


def test_bad_sharding_settings_are_clear_errors(tiny_dir):
    with pytest.raises(ModelLoadError, match="add --device-map auto"):
        load_model(str(tiny_dir), max_memory={"cpu": "1GiB"}, self_check=False)
    with pytest.raises(ModelLoadError, match="either device 'cpu' or device map"):
        load_model(str(tiny_dir), device="cpu", device_map="auto", self_check=False)
    with pytest.raises(ModelLoadError, match="Device map 'everywhere' is unknown"):
        load_model(str(tiny_dir), device_map="everywhere", self_check=False)
