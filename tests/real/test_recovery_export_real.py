"""Recovery and export on the embedded model: recovery lowers perplexity, and exported models load in stock
transformers, through ``load_exported``, the CLI and the app."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import app_test

from pruneviz import api
from pruneviz.core.gating import apply_plan
from pruneviz.core.plan import PruningPlan
from pruneviz.studies.export import export_model, load_exported
from pruneviz.studies.recovery import fit_recovery


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
    at = app_test()
    at.run()
    at.sidebar.selectbox(key="_model_choice").set_value("other").run()
    at.sidebar.text_input(key="_model_other").input(str(tmp_path / "sub")).run()
    assert not at.exception, at.exception
    assert any("20.attn" in info.value and "export" in info.value for info in at.sidebar.info)
    at.switch_page("pages/2_Prune_and_evaluate.py")
    at.run()
    assert not at.exception, at.exception
    assert at.text_input(key="prune_plan").value == "20.attn"
    assert at.checkbox(key="toggle_20_attn").value
    assert at.selectbox(key="prune_recovery").options == ["none", f"exported: {bias.label}"]
    assert at.selectbox(key="prune_recovery").value == f"exported: {bias.label}"
    # clearing the plan sticks: the export's plan is adopted once per load, not on every rerun
    at.text_input(key="prune_plan").input("").run()
    assert not at.exception, at.exception
    assert at.text_input(key="prune_plan").value == "" and not at.checkbox(key="toggle_20_attn").value


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
