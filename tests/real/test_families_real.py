"""Real weights of three architecture families: pruneviz's gates and static metrics equal independent references.

* llama: SmolLM2-135M; qwen2: Qwen2.5-Coder-0.5B; gemma3: Gemma-3-270M (sliding-window and global attention,
  post-norms around each sublayer), each in float32.
* Pruning any unit (every block, attention and MLP sublayer) through pruneviz's plan gates gives the loss
  of a plain ``transformers`` copy of the model whose pruned sublayers' output projections (``o_proj``,
  ``down_proj``) are zeroed: a zero projection adds nothing to the residual stream (through Gemma's
  post-norm too, as RMSNorm of zero is zero).
* Static metrics through ``api.influence`` equal the formulas applied to residuals captured with plain hooks.
"""

from __future__ import annotations

import pytest
import torch
from helpers import STATIC_METRIC_NAMES, assert_static_table_matches, static_metrics_with_hooks

from pruneviz import api
from pruneviz.core.assets import EMBEDDED_MODELS
from pruneviz.core.gating import apply_plan
from pruneviz.core.loading import _gguf_to_safetensors, load_model
from pruneviz.core.plan import PruningPlan, units_of
from pruneviz.influence.static import CSV_COLUMNS

pytestmark = pytest.mark.real

# per family: the model type transformers reads from the file, the block's module whose input is resid_mid,
# and the output projection of each sublayer
FAMILIES = {
    "smollm2": ("llama", "post_attention_layernorm"),
    "qwen2.5-coder-0.5b": ("qwen2", "post_attention_layernorm"),
    "gemma3-270m": ("gemma3_text", "pre_feedforward_layernorm"),
}
PROJECTIONS = {"attn": ("self_attn", "o_proj"), "mlp": ("mlp", "down_proj")}
TEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower."
)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, smollm2):
    """``(name, pruneviz model, plain transformers copy)`` in float32; the larger two are freed after the module."""
    from transformers import AutoModelForCausalLM

    name = request.param
    loaded = smollm2 if name == "smollm2" else load_model(name, device="cpu", dtype="float32")
    plain = AutoModelForCausalLM.from_pretrained(_gguf_to_safetensors(EMBEDDED_MODELS[name].path()), dtype=torch.float32)
    yield name, loaded, plain.eval()


def zeroed_loss(plain, ids: torch.Tensor, pruned: set[tuple[int, str]]) -> float:
    """The plain copy's loss with the output projections of ``pruned`` sublayers zeroed (restored afterwards)."""
    saved = []
    for layer, sublayer in pruned:
        parent, projection = PROJECTIONS[sublayer]
        module = getattr(getattr(plain.model.layers[layer], parent), projection)
        for tensor in (module.weight, module.bias):
            if tensor is not None:
                saved.append((tensor, tensor.detach().clone()))
                tensor.data.zero_()
    try:
        with torch.no_grad():
            return float(plain(ids, labels=ids).loss)
    finally:
        for tensor, value in saved:
            tensor.data.copy_(value)


def test_each_family_loads_with_its_own_architecture(family):
    name, loaded, plain = family
    assert plain.config.model_type == loaded.model.config.model_type == FAMILIES[name][0]
    assert loaded.n_blocks == plain.config.num_hidden_layers == {"smollm2": 30, "qwen2.5-coder-0.5b": 24, "gemma3-270m": 18}[name]


def test_pruning_any_unit_equals_zeroing_its_output_projections(family):
    name, loaded, plain = family
    ids = loaded.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        unpruned = float(loaded.model(ids, labels=ids).loss)
    assert unpruned == pytest.approx(zeroed_loss(plain, ids, set()), abs=1e-5)
    units = units_of(loaded.n_blocks, "all")
    for unit in units:
        plan = PruningPlan.of([unit])
        with torch.no_grad(), apply_plan(plan):
            gated = float(loaded.model(ids, labels=ids).loss)
        assert gated == pytest.approx(zeroed_loss(plain, ids, set(plan.pruned)), abs=1e-5), (name, str(unit))
        assert gated != unpruned, (name, str(unit))
    assert len(units) == 3 * loaded.n_blocks


def test_static_metrics_equal_the_formulas_on_hooked_residuals(family):
    name, loaded, _ = family
    batch, label, _ = api.calibration_batch(loaded, "wiki", 3, 40)
    table = api.influence(loaded, "wiki", STATIC_METRIC_NAMES, "all", samples=3, seq_len=40, use_cache=False)
    expected = static_metrics_with_hooks(loaded, batch, batch_size=8, mlp_norm=FAMILIES[name][1])
    assert len(table) == loaded.n_blocks * 3 * len(STATIC_METRIC_NAMES)
    assert_static_table_matches(table, expected, label, [*CSV_COLUMNS, "dtype"])
