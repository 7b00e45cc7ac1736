"""A stand-in worse than none, beyond noise, is named (studies/recovery_report.py)."""

from __future__ import annotations

import pandas as pd

from pruneviz import api


def comparison(rows: list[tuple[str, float, float, float, float]]) -> pd.DataFrame:
    """A compare_recoveries-shaped table: variant, wiki perplexity (± stderr), mmlu acc (± stderr)."""
    return pd.DataFrame(rows, columns=["variant", "wiki perplexity", "wiki perplexity stderr", "mmlu acc", "mmlu acc stderr"])


def test_a_recovery_worse_than_no_stand_in_beyond_noise_is_named_in_each_metrics_direction():
    table = comparison([
        ("unpruned", 20.0, 1.0, 0.50, 0.02),
        ("pruned", 28.8, 1.0, 0.45, 0.02),
        ("lowrank-8/emulate", 33.3, 1.0, 0.44, 0.02),  # perplexity 4.5 higher: beyond 2 x sqrt(2) = 2.8; acc: noise
        ("bias/emulate", 27.0, 1.0, 0.30, 0.02),  # perplexity better; acc 0.15 lower: beyond noise
    ])
    assert api.recoveries_worse_than_none(table) == [
        ("lowrank-8/emulate", "wiki perplexity", 33.3, 28.8),
        ("bias/emulate", "mmlu acc", 0.30, 0.45),
    ]


def test_better_or_noisy_recoveries_are_not_named():
    table = comparison([("unpruned", 20.0, 1.0, 0.5, 0.02), ("pruned", 28.8, 2.0, 0.45, 0.05), ("bias/emulate", 30.0, 2.0, 0.40, 0.05)])
    assert api.recoveries_worse_than_none(table) == []


def test_default_calibration_gives_least_squares_fits_several_tokens_per_dimension():
    from pruneviz.studies.recovery import TOKENS_PER_DIMENSION, default_calibration_documents, too_few_calibration_tokens

    assert default_calibration_documents(576) == 32  # SmolLM2: 4,096 tokens, 7.1 per dimension
    assert default_calibration_documents(1536) == 48 and 48 * 128 >= TOKENS_PER_DIMENSION * 1536  # Qwen2.5-1.5B
    assert "fewer than 4 × d = 2,304" in too_few_calibration_tokens("lowrank", 512, 576)
    assert too_few_calibration_tokens("lowrank", 2304, 576) is None
    assert too_few_calibration_tokens("bias", 64, 576) is None and too_few_calibration_tokens("rescale", 64, 576) is None
