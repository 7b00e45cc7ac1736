"""Greedy generation under a plan on the embedded model."""

from __future__ import annotations

import pytest

from pruneviz.core.errors import SettingError
from pruneviz.core.plan import PruningPlan
from pruneviz.studies.generation import generate_greedy


@pytest.mark.real
def test_greedy_generation_changes_with_the_plan(smollm2):
    prompt = "The capital of France is"
    full = generate_greedy(smollm2, prompt, max_new_tokens=6)
    assert full.new_tokens == 6 and "Paris" in full.text
    again = generate_greedy(smollm2, prompt, max_new_tokens=6)
    assert again.text == full.text and full.tokens_per_second > 0
    broken = generate_greedy(smollm2, prompt, PruningPlan.parse(",".join(str(i) for i in range(0, 30, 2))), max_new_tokens=6)
    assert broken.text != full.text
    with pytest.raises(SettingError, match="empty"):
        generate_greedy(smollm2, "  ")
