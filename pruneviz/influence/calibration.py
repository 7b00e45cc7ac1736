"""Calibration tokens for static metrics and recovery fits: text documents or MMLU prompts."""

from __future__ import annotations

from ..core.cache import make_key
from ..core.errors import SettingError
from ..data.mmlu import load_mmlu, mmlu_fingerprint, select_subjects, split_exemplars
from ..data.tasks import TaskSpec
from ..data.text import document_batch, load_corpus
from ..evaluation.mmlu import build_prompt


def calibration_batch(loaded, data: str, samples: int, seq_len: int):
    """Calibration tokens for static metrics.

    Args:
        data: ``"wiki"`` (calibration half), a text file (its calibration half), ``"mmlu"`` or
            ``"mmlu:<subject|category>"`` (0-shot letter-format prompts, first ``samples`` questions
            spread round-robin over the chosen subjects).
        samples: number of sequences N.
        seq_len: truncation length T (tokens).

    Returns:
        ``(batch, label, fingerprint)``: ``{"input_ids": [N, T'], "attention_mask": [N, T']}``, the
        dataset label for reports, and a digest for cache keys.

    Raises:
        SettingError: ``seq_len`` or ``samples`` out of range.
        DataError: unknown dataset, too few documents.
    """
    if not 2 <= seq_len <= loaded.max_length:
        raise SettingError(f"Sequence length {seq_len} is outside 2-{loaded.max_length} tokens for this model; pick one in range.")
    if samples < 1:
        raise SettingError(f"--samples must be at least 1 (got {samples}).")
    spec = TaskSpec.parse(data).require_scoring_data()
    if spec.is_mmlu:
        subset, label = spec.subset, spec.spec
        table = load_mmlu("mmlu")
        _, scored = split_exemplars(table, select_subjects(table, subset), 0, None)
        # round-robin over subjects so a small sample covers all of them
        scored = scored.sort_values(["index", "subject"]).head(samples)
        texts = tuple(build_prompt(row, scored.iloc[:0], "letter") for row in scored.itertuples())
        batch = document_batch(loaded.tokenizer, texts, samples, seq_len, label, "question")
        # the subset is part of the digest: every subset of the one MMLU file once shared its cache entries
        return batch, label, make_key("mmlu-prompts", mmlu_fingerprint("mmlu"), subset)
    corpus = load_corpus(spec.spec, "calibration")
    return document_batch(loaded.tokenizer, corpus.texts, samples, seq_len, corpus.description), corpus.label, corpus.fingerprint
