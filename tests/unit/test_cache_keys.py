"""Cache keys built from the call itself (core/cache.py: call_key, cached_call)."""

from __future__ import annotations

import pytest
import torch

from pruneviz.core import cache
from pruneviz.core.plan import PruningPlan, Unit


def score(model, plan: PruningPlan, batch: torch.Tensor, windows: int = 4, scale: float = 1.0, progress=None) -> float:
    return float(batch.sum()) * scale + windows


class Model:
    fingerprint = "model-a"


def key(*args, **kwargs) -> str:
    return cache.call_key(score, args, kwargs, ignore=("progress",))


def test_every_argument_is_in_the_key_defaults_included():
    batch = torch.arange(6).view(2, 3)
    base = key(Model(), PruningPlan.parse("1.attn"), batch)
    assert key(Model(), PruningPlan.parse("1.attn"), batch, windows=4) == base  # a default, written out
    assert key(Model(), PruningPlan.parse("1.attn"), batch, progress=print) == base  # ignored
    other_model = type("Other", (), {"fingerprint": "model-b"})()
    changed = [
        key(other_model, PruningPlan.parse("1.attn"), batch),
        key(Model(), PruningPlan.parse("1"), batch),
        key(Model(), PruningPlan.parse("1.attn"), batch + 1),
        key(Model(), PruningPlan.parse("1.attn"), batch.to(torch.bfloat16)),
        key(Model(), PruningPlan.parse("1.attn"), batch, windows=5),
        key(Model(), PruningPlan.parse("1.attn"), batch, scale=0.5),
        cache.call_key(score, (Model(), PruningPlan.parse("1.attn"), batch), ignore=("progress",), content="file-v2"),
    ]
    assert len({base, *changed}) == len(changed) + 1


def test_units_stand_ins_and_collections_are_keyed_by_content():
    first = torch.nn.Linear(2, 2)
    second = torch.nn.Linear(2, 2)
    with torch.no_grad():
        second.weight.copy_(first.weight)
        second.bias.copy_(first.bias)
    assert cache._key_part("s", {(1, "attn"): first}) == cache._key_part("s", {(1, "attn"): second})
    with torch.no_grad():
        second.bias.add_(1)
    assert cache._key_part("s", {(1, "attn"): first}) != cache._key_part("s", {(1, "attn"): second})
    assert cache._key_part("units", [Unit(3, "mlp"), Unit(4)]) == ["3.mlp", "4"]


def test_an_argument_that_cannot_be_keyed_must_be_named_ignored():
    with pytest.raises(TypeError, match="Argument 'progress' .* cannot be part of a cache key; name it in ignore="):
        cache.call_key(score, (Model(), PruningPlan(), torch.zeros(1)), {"progress": print})


def test_cached_call_computes_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEVIZ_CACHE_DIR", str(tmp_path))
    calls = []

    def counted(x: int, progress=None) -> int:
        calls.append(x)
        return 2 * x

    assert cache.cached_call(counted, (3,), {"progress": print}, ignore=("progress",)) == (6, False)
    assert cache.cached_call(counted, (3,), {}, ignore=("progress",)) == (6, True)
    assert calls == [3]
