"""Recovery stand-ins (closed-form fits, exact recovery of a linear unit) and export of pruned models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from pruneviz import api
from pruneviz.core.errors import Cancelled, SettingError
from pruneviz.core.gating import apply_plan, record_residuals
from pruneviz.core.loading import from_modules
from pruneviz.core.plan import PruningPlan
from pruneviz.studies.export import export_model, load_exported
from pruneviz.studies.recovery import Recovery, _Moments, fit_closed_form, fit_recovery
from tests.conftest import REPO, tiny_llama


def random_batch(vocab=128, rows=4, seq=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (rows, seq), generator=generator)
    mask = torch.ones(rows, seq, dtype=torch.long)
    mask[0, -5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def captured(loaded, batch, layer):
    """resid_pre / resid_mid / resid_post of ``layer`` over real tokens, [n, d] fp64."""
    seen = {}

    def keep(index, name, tensor):
        if index == layer:
            seen[name] = tensor[batch["attention_mask"].bool()].double()

    with torch.no_grad(), record_residuals(keep):
        loaded.hidden_states(batch["input_ids"], batch["attention_mask"])
    return seen


def test_bias_fit_is_exactly_the_mean_update(tiny):
    batch = random_batch()
    for unit, (x_name, y_name) in {"1.attn": ("resid_pre", "resid_mid"), "2.mlp": ("resid_mid", "resid_post"),
                                  "3": ("resid_pre", "resid_post")}.items():
        plan = PruningPlan.parse(unit)
        recovery = fit_recovery(tiny, plan, batch, method="bias")
        (stand_in,) = recovery.stand_ins.values()
        layer = plan.first_layer()
        seen = captured(tiny, batch, layer)
        expected = (seen[y_name] - seen[x_name]).mean(0)
        torch.testing.assert_close(stand_in.bias.double(), expected, rtol=0, atol=1e-6)
        assert recovery.added_params == 32


def test_lowrank_at_full_rank_equals_ordinary_least_squares():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, 12, generator=generator, dtype=torch.float64)
    y = torch.randn(500, 12, generator=generator, dtype=torch.float64) + x @ torch.randn(12, 12, generator=generator, dtype=torch.float64)
    moments = _Moments(12)
    moments.add(x[:300], y[:300])
    moments.add(x[300:], y[300:])
    stand_in = fit_closed_form(moments, "lowrank", rank=12, ridge=0.0)
    design = np.hstack([x.numpy(), np.ones((500, 1))])
    solution = np.linalg.lstsq(design, y.numpy(), rcond=None)[0]
    ols_prediction = design @ solution
    ours = stand_in(x.float()).detach().double().numpy()
    np.testing.assert_allclose(ours, ols_prediction, atol=1e-4)
    # rank r < d keeps the best rank-r part: error grows as the rank drops, and never beats OLS
    errors = [np.square(fit_closed_form(moments, "lowrank", r, 0.0)(x.float()).detach().double().numpy() - y.numpy()).mean() for r in (2, 6, 12)]
    assert errors[0] > errors[1] > errors[2] >= np.square(ols_prediction - y.numpy()).mean() - 1e-6


class LinearUpdate(nn.Module):
    """An MLP stand-in whose update is exactly x W + c (W of rank 4), as a test fixture."""

    def __init__(self, d: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(0.3 * torch.randn(d, 4, generator=generator) @ torch.randn(4, d, generator=generator))
        self.offset = nn.Parameter(0.1 * torch.randn(d, generator=generator))

    def forward(self, hidden_states):
        return hidden_states @ self.weight + self.offset


def test_exactly_linear_unit_is_recovered(tmp_path):
    model = tiny_llama(n_blocks=3, seed=5)
    block = model.model.layers[1]
    # the MLP sees resid_mid itself (no norm) and adds an affine function of it: update = x W + c
    block.post_attention_layernorm = nn.Identity()
    block.mlp = LinearUpdate(32)
    loaded = from_modules("linear-mlp", model, tokenizer=None)
    batch = random_batch(rows=8, seq=24)
    plan = PruningPlan.parse("1.mlp")
    with torch.no_grad():
        full = loaded.hidden_states(batch["input_ids"], batch["attention_mask"])
    for rank in (4, 32):
        recovery = fit_recovery(loaded, plan, batch, method="lowrank", rank=rank, ridge=0.0)
        with torch.no_grad(), apply_plan(plan, recovery.stand_ins):
            recovered = loaded.hidden_states(batch["input_ids"], batch["attention_mask"])
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(recovered[real], full[real], rtol=0, atol=1e-5)
    with torch.no_grad(), apply_plan(plan):
        pruned = loaded.hidden_states(batch["input_ids"], batch["attention_mask"])
    assert (pruned - full)[batch["attention_mask"].bool()].abs().max() > 1e-2
    # saved and loaded stand-ins give the same result
    recovery.save(tmp_path / "rec")
    loaded_back = Recovery.load(tmp_path / "rec", 32)
    assert loaded_back.fingerprint == recovery.fingerprint and loaded_back.label == "lowrank-32/emulate"


@pytest.mark.real
def test_recovering_an_early_block_lowers_wikipedia_perplexity(smollm2):
    plan = PruningPlan.parse("3")
    recovery = api.recover(smollm2, plan, "lowrank", rank=8, samples=16, seq_len=128)
    options = {"windows": 4, "seq_len": 128}
    pruned = api.evaluate(smollm2, plan, "wiki", **options).metrics["perplexity"]
    recovered = api.evaluate(smollm2, plan, "wiki", recovery=recovery, **options)
    full = api.evaluate(smollm2, PruningPlan(), "wiki", **options).metrics["perplexity"]
    assert full < recovered.metrics["perplexity"] < pruned
    assert recovered.recovery == "lowrank-8/emulate"
    assert recovery.added_params == 2 * 576 * 8 + 576
    assert 0 < recovery.added_percent < 1


@pytest.mark.real
def test_exported_block_pruned_model_loads_in_stock_transformers(smollm2, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plan = PruningPlan.parse("4,17")
    report = export_model(smollm2, plan, tmp_path / "pruned")
    assert report.standalone and report.blocks_kept == 28
    assert report.kv_bytes_per_token_saved == 2 * 2 * 3 * 64 * 4  # 2 attn sublayers, K and V, fp32
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "pruned")
    assert model.config.num_hidden_layers == 28
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(28))
    assert sum(p.numel() for p in model.parameters()) == report.params_after
    text = "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was built for the 1889 World's Fair."
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        stock = model(**ids, labels=ids.input_ids).loss.item()
        with apply_plan(plan):
            ours = smollm2.model(**ids, labels=ids.input_ids).loss.item()
        generated = model.generate(**ids, max_new_tokens=5, do_sample=False, use_cache=True)
        uncached = model.generate(**ids, max_new_tokens=5, do_sample=False, use_cache=False)
    assert stock == pytest.approx(ours, abs=1e-4)
    assert generated.shape[1] == ids.input_ids.shape[1] + 5
    assert torch.equal(generated, uncached)


@pytest.mark.real
def test_sublayer_export_round_trips_through_load_exported_the_cli_and_the_app(smollm2, tmp_path):
    plan = PruningPlan.parse("20.attn")
    batch, _, _ = api.calibration_batch(smollm2, "wiki", 4, 32)
    bias = fit_recovery(smollm2, plan, batch, method="bias")
    report = export_model(smollm2, plan, tmp_path / "sub", recovery=bias)
    assert not report.standalone
    loaded, restored_plan, recovery = load_exported(tmp_path / "sub", device="cpu", dtype="float32")
    assert restored_plan == plan and recovery.label == bias.label
    options = {"windows": 2, "seq_len": 64}
    expected = api.evaluate(smollm2, plan, "wiki", recovery=bias, **options).metrics["perplexity"]
    unrecovered = api.evaluate(smollm2, plan, "wiki", **options).metrics["perplexity"]
    assert expected != pytest.approx(unrecovered, rel=1e-6), "the bias must change the result for this test to mean anything"
    assert api.evaluate(loaded, restored_plan, "wiki", recovery=recovery, **options).metrics["perplexity"] == pytest.approx(
        expected, rel=1e-6
    )
    # the CLI pointed at the export applies the plan and the recovery kept beside the weights
    from pruneviz.cli import main

    assert main(["evaluate", "--model", str(tmp_path / "sub"), "--device", "cpu", "--dtype", "float32", "--windows", "2", "--window-len", "64",
                 "--json", str(tmp_path / "sub.json")]) == 0
    document = json.loads((tmp_path / "sub.json").read_text())
    assert document["prune"] == "20.attn"
    assert document["metrics"]["perplexity"] == pytest.approx(expected, rel=1e-6)
    # --prune on an export adds units to its plan (it used to replace it); the export's recovery fits only its own plan
    assert main(["evaluate", "--model", str(tmp_path / "sub"), "--device", "cpu", "--dtype", "float32", "--windows", "2", "--window-len", "64",
                 "--prune", "3", "--json", str(tmp_path / "more.json")]) == 0
    more = json.loads((tmp_path / "more.json").read_text())
    assert more["prune"] == "3,20.attn" and more["recover"] is None
    assert more["metrics"]["perplexity"] == pytest.approx(
        api.evaluate(smollm2, PruningPlan.parse("3,20.attn"), "wiki", **options).metrics["perplexity"], rel=1e-6
    )
    # the app's "another model" box adopts the plan and chooses the recovery, as the CLI applies them (it used to show the full model)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.run()
    at.sidebar.selectbox(key="_model_choice").set_value("other").run()
    at.sidebar.text_input(key="_model_other").input(str(tmp_path / "sub")).run()
    assert not at.exception, at.exception
    assert any("20.attn" in info.value and "export" in info.value for info in at.sidebar.info)
    at.switch_page("pages/2_Prune_and_evaluate.py")
    at.run()
    assert not at.exception, at.exception
    assert at.text_input(key="plan_text").value == "20.attn"
    assert at.checkbox(key="toggle_20_attn").value
    assert at.selectbox(key="prune_recovery").options == ["none", f"exported: {bias.label}"]
    assert at.selectbox(key="prune_recovery").value == f"exported: {bias.label}"
    # clearing the plan sticks: the export's plan is adopted once per load, not on every rerun
    at.text_input(key="plan_text").input("").run()
    assert not at.exception, at.exception
    assert at.text_input(key="plan_text").value == "" and not at.checkbox(key="toggle_20_attn").value


def test_train_fit_improves_on_emulate_and_keeps_the_best_parameters(tiny):
    from pruneviz.studies.recovery import lm_loss

    fit_batch, heldout = random_batch(rows=8, seq=16, seed=1), random_batch(rows=4, seq=16, seed=2)
    plan = PruningPlan.parse("1")
    emulated = fit_recovery(tiny, plan, fit_batch, method="lowrank", rank=4)
    ticks = []
    trained = fit_recovery(tiny, plan, fit_batch, method="lowrank", rank=4, fit="train", heldout=heldout,
                           steps=20, learning_rate=1e-2, progress=lambda done, total: ticks.append((done, total)))
    assert trained.label == "lowrank-4/train" and trained.history[0] == pytest.approx(
        lm_loss(tiny, plan, emulated.stand_ins, heldout["input_ids"], heldout["attention_mask"]).item(), rel=1e-6
    )
    final = lm_loss(tiny, plan, trained.stand_ins, heldout["input_ids"], heldout["attention_mask"]).item()
    # the kept parameters are those of the best held-out evaluation, never worse than the start
    assert final == pytest.approx(min(trained.history), rel=1e-6) and final <= trained.history[0]
    assert ticks[-1][0] <= ticks[-1][1] and ticks[0] == (1, 21)
    with pytest.raises(SettingError, match="held-out"):
        fit_recovery(tiny, plan, fit_batch, method="bias", fit="train")


def test_delete_export_refuses_a_directory_that_is_not_an_export(tmp_path):
    from pruneviz.core.errors import DataError
    from pruneviz.studies.export import PLAN_FILE, delete_export

    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "weights.bin").write_bytes(b"x" * 10)
    with pytest.raises(DataError, match="not a pruneviz export"):
        delete_export(tmp_path / "keep")
    assert (tmp_path / "keep" / "weights.bin").exists()
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / PLAN_FILE).write_text("{}")
    (tmp_path / "export" / "model.safetensors").write_bytes(b"y" * 100)
    assert delete_export(tmp_path / "export") == 102 and not (tmp_path / "export").exists()


def test_cancelled_training_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(tiny, monkeypatch):
    from pruneviz.core.cache import read_partial
    from pruneviz.studies import recovery as recovery_module

    fit_batch, heldout = random_batch(rows=8, seq=16, seed=3), random_batch(rows=4, seq=16, seed=4)
    plan = PruningPlan.parse("2.mlp")
    options = dict(method="lowrank", rank=4, fit="train", heldout=heldout, steps=20, learning_rate=1e-2, patience=100)
    whole = fit_recovery(tiny, plan, fit_batch, **options)

    def cancel_at_step_12(done, total):
        if done == 1 + 12:  # one emulated unit, then training steps
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        fit_recovery(tiny, plan, fit_batch, progress=cancel_at_step_12, checkpoint="train-checkpoint-test", **options)
    assert read_partial("train-checkpoint-test")["step"] == 12  # saved at the evaluation of step 12 (every 2 steps)
    losses = []
    original = recovery_module.lm_loss
    monkeypatch.setattr(recovery_module, "lm_loss", lambda *args: losses.append(1) or original(*args))
    resumed = fit_recovery(tiny, plan, fit_batch, checkpoint="train-checkpoint-test", **options)
    # 8 training steps and 4 held-out evaluations are left; the first 12 steps are not repeated
    assert len(losses) == 8 + 4
    assert resumed.history == whole.history
    for key, stand_in in whole.stand_ins.items():
        for mine, theirs in zip(resumed.stand_ins[key].parameters(), stand_in.parameters()):
            torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)
    assert read_partial("train-checkpoint-test") is None  # finished: the checkpoint is gone


@pytest.mark.real
def test_recover_reads_held_out_documents_for_train_only(smollm2, tmp_path):
    from pruneviz.core.errors import DataError
    from pruneviz.data.text import load_corpus

    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n\n".join(f"document {i} says something about topic {i * 7}." for i in range(24)))
    calibration = len(load_corpus(str(corpus), "calibration").texts)
    plan = PruningPlan.parse("1")
    # every calibration document fits a closed-form stand-in; none is kept back
    fitted = api.recover(smollm2, plan, "bias", data=str(corpus), samples=calibration, seq_len=16, use_cache=False)
    assert fitted.calibration == f"{corpus} (calibration half), {calibration} documents x 16 tokens"
    with pytest.raises(DataError) as caught:
        api.recover(smollm2, plan, "lowrank", 2, fit="train", data=str(corpus), samples=calibration, seq_len=16, use_cache=False)
    assert str(caught.value).endswith(f"(fit 'train' holds out 2 samples beyond the {calibration} it fits on, for early stopping)")
    # other data errors are not about sample counts and get no such note
    with pytest.raises(DataError) as caught:
        api.recover(smollm2, plan, "lowrank", 2, fit="train", data=str(tmp_path / "missing.txt"), use_cache=False)
    assert str(caught.value).startswith("No text file at") and "holds out" not in str(caught.value)


def test_loading_what_is_not_a_recovery_says_what_it_is(tmp_path):
    from pruneviz.core.errors import DataError

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(DataError, match=r"is a model, not a saved recovery; give it as the model"):
        Recovery.load(tmp_path, 32)
    with pytest.raises(DataError, match=r"^There is no recovery at .*missing; give the folder `python -m pruneviz recover --out` wrote"):
        Recovery.load(tmp_path / "missing", 32)
    (tmp_path / "notes.md").write_text("a file")
    with pytest.raises(DataError, match=r"notes.md is a file, not a recovery folder"):
        Recovery.load(tmp_path / "notes.md", 32)
    (tmp_path / "config.json").unlink()
    (tmp_path / "notes.txt").write_text("not a recovery")
    with pytest.raises(DataError, match=r"holds no recovery.json, so it is not a saved recovery; give the folder"):
        Recovery.load(tmp_path, 32)
    (tmp_path / "recovery.json").write_text("{truncated")
    with pytest.raises(DataError, match=r"^The recovery in .* is damaged \(.*\); fit it again"):
        Recovery.load(tmp_path, 32)


def test_a_recovery_with_missing_keys_or_a_truncated_tensor_file_is_named_damaged(tiny, tmp_path):
    from pruneviz.core.errors import DataError

    batch = random_batch(rows=4, seq=8, seed=3)
    saved = fit_recovery(tiny, PruningPlan.parse("1"), batch, method="bias").save(tmp_path / "rec")
    assert Recovery.load(saved, tiny.info.hidden_size).label == "bias/emulate"
    tensors = saved / "stand_ins.safetensors"
    whole = tensors.read_bytes()
    tensors.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"^The recovery in .*rec is damaged \(.*\); fit it again"):
        Recovery.load(saved, tiny.info.hidden_size)
    tensors.write_bytes(whole)
    meta = json.loads((saved / "recovery.json").read_text())
    del meta["rank"], meta["fit"]
    (saved / "recovery.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"is damaged \(recovery.json lacks rank, fit\)"):
        Recovery.load(saved, tiny.info.hidden_size)
    (saved / "recovery.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"is damaged \(recovery.json lacks plan, method"):
        Recovery.load(saved, tiny.info.hidden_size)
