"""Recovery stand-ins (closed-form fits, exact recovery of a linear unit, training) and exports, on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_llama
from torch import nn

from pruneviz.core.errors import Cancelled, SettingError
from pruneviz.core.gating import apply_plan, record_residuals
from pruneviz.core.loading import from_modules
from pruneviz.core.plan import PruningPlan
from pruneviz.studies.recovery import Recovery, _Moments, fit_closed_form, fit_recovery


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
    assert (whole.resumed_from, resumed.resumed_from) == (0, 12)  # it says where it went on from
    for key, stand_in in whole.stand_ins.items():
        for mine, theirs in zip(resumed.stand_ins[key].parameters(), stand_in.parameters()):
            torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)
    assert read_partial("train-checkpoint-test") is None  # finished: the checkpoint is gone


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
