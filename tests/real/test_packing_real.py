"""Shared-prefix packing on the embedded model: real MMLU cloze prompts packed equal each sequence alone."""

from __future__ import annotations

import pytest
import torch
from helpers import packed_hidden

from pruneviz.core.architecture import resolve
from pruneviz.engine.packing import pack_groups, packing_groups


def _loglikelihood(loaded, hidden: torch.Tensor, targets: list[int]) -> float:
    """Summed log-probability (nats) of ``targets`` given ``[len(targets), d]`` hidden states."""
    logprobs = torch.log_softmax(loaded.logits(hidden), dim=-1)
    return logprobs.gather(1, torch.tensor(targets)[:, None]).sum().item()


@pytest.mark.real
def test_smollm2_mmlu_cloze_packed_equals_per_sequence(smollm2):
    """Two real 1-shot MMLU cloze prompts x 4 answers, packed per question and per subject, match the plain path."""
    from pruneviz.data.mmlu import load_mmlu, split_exemplars
    from pruneviz.engine.scoring import encode_pair
    from pruneviz.evaluation.mmlu import build_prompt

    exemplars, scored = split_exemplars(load_mmlu("mmlu"), ["anatomy"], shots=1, per_subject=2)
    pairs, keys = [], []
    for question, row in enumerate(scored.itertuples()):
        prompt = build_prompt(row, exemplars, "cloze")
        for choice in row.choices:
            pairs.append(encode_pair(smollm2.tokenizer, prompt, f" {choice}"))
            keys.append(question)
    sequences = [(ctx + cont)[:-1] for ctx, cont in pairs]
    base = resolve(smollm2.model, smollm2.adapter.base)
    alone = [smollm2.hidden_states(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in sequences]
    for grouping in (keys, ["anatomy"] * len(keys)):
        groups = packing_groups(sequences, grouping, max_tokens=2048)
        assert len(groups) == len(set(grouping))
        batch = pack_groups(sequences, groups, smollm2.tokenizer.pad_token_id, smollm2.model.config, smollm2.dtype)
        assert batch.input_ids.numel() < sum(len(s) for s in sequences)  # the shared context is stored once
        hidden = packed_hidden(base, batch)
        for index, (ctx, cont) in enumerate(pairs):
            row, columns = batch.locate(index)
            assert (hidden[row, columns] - alone[index]).abs().max().item() < 1e-4
            # the answer's log-likelihood (position p predicts token p + 1) is what cloze scoring reads
            answer = slice(len(ctx) - 1, len(ctx) - 1 + len(cont))
            packed_ll = _loglikelihood(smollm2, hidden[row, columns[answer]], cont)
            assert packed_ll == pytest.approx(_loglikelihood(smollm2, alone[index][answer], cont), abs=1e-4)
