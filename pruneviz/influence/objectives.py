"""Task objectives for adaptive influence: what a pruned subnetwork costs on a dataset.

Two objectives (Siddiqui et al. 2024, §3.2):

* ``loss`` - on text, the mean next-token cross-entropy (nats/token) over real tokens; on MMLU, the
  cross-entropy of the gold letter over the four letter logits " A".." D" at the answer position
  (nats/question, the paper's "MMLU loss").
* ``logit`` - the mean L2 distance between the pruned and the full model's next-token logits at the
  same scored positions.

Both are "lower is better" statistics of a subnetwork; a unit's Shapley value for them is negative
when the unit matters, so influence = -Shapley.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.mmlu import LETTERS, load_mmlu, mmlu_fingerprint, mmlu_half, select_subjects, split_exemplars
from ..data.tasks import TaskSpec
from ..data.text import document_batch, load_corpus
from ..engine.scoring import pad_right, single_token_ids
from ..evaluation.mmlu import build_prompt

OBJECTIVES = ("loss", "logit")


@dataclass(frozen=True)
class ObjectiveData:
    """A tokenised dataset with the positions an objective scores.

    Attributes:
        input_ids / attention_mask: ``[N, T]`` right-padded tokens.
        rows / positions: ``[P]`` row and position of every scored prediction.
        targets: ``[P]`` next-token ids (text) or ``[P, 4]`` letter token ids (MMLU).
        gold: ``[P]`` gold letter index 0-3 (MMLU) or ``None`` (text).
        label: dataset label for reports (says which half of which data).
        fingerprint: digest for cache keys.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor
    gold: torch.Tensor | None
    label: str
    fingerprint: str

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, start: int, stop: int) -> "ObjectiveData":
        """The sequences ``start:stop`` with their scored positions (rows renumbered from 0)."""
        keep = (self.rows >= start) & (self.rows < stop)
        return ObjectiveData(
            self.input_ids[start:stop], self.attention_mask[start:stop], self.rows[keep] - start,
            self.positions[keep], self.targets[keep], None if self.gold is None else self.gold[keep],
            self.label, self.fingerprint,
        )


def text_objective_data(loaded, data: str, samples: int, seq_len: int) -> ObjectiveData:
    """Next-token prediction on the calibration half of a corpus (``"wiki"`` or a file)."""
    corpus = load_corpus(data, "calibration")
    batch = document_batch(loaded.tokenizer, corpus.texts, samples, seq_len, corpus.description)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    # position p predicts token p + 1; both must be real tokens
    scored = mask[:, :-1].bool() & mask[:, 1:].bool()
    rows, positions = scored.nonzero(as_tuple=True)
    return ObjectiveData(ids, mask, rows, positions, ids[rows, positions + 1], None, corpus.label,
                         f"{corpus.label}:{corpus.fingerprint}:{samples}x{seq_len}")


def mmlu_objective_data(loaded, subset: str | None, per_subject: int, half: str = "all") -> ObjectiveData:
    """Gold-letter prediction on 0-shot letter-format MMLU prompts.

    Args:
        subset: subject, category or comma list (``None`` = all 57 subjects).
        per_subject: questions taken per subject before halving.
        half: ``"all"`` (the very questions that are evaluated: the paper's optimistic setting),
            ``"fit"`` (held-out protocol: compute here, evaluate on ``"test"``).
    """
    table = load_mmlu("mmlu")
    _, scored = split_exemplars(table, select_subjects(table, subset), 0, per_subject)
    scored = mmlu_half(scored, half)
    prompts = [build_prompt(row, scored.iloc[:0], "letter") for row in scored.itertuples()]
    tokenizer = loaded.tokenizer
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    # sort by length so that batches carry little padding; the objective is a mean over questions
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    scored, prompts, encoded = scored.iloc[order], [prompts[i] for i in order], [encoded[i] for i in order]
    letters = [single_token_ids(tokenizer, p, [f" {x}" for x in LETTERS]) for p in prompts]
    ids, mask = pad_right(encoded, tokenizer.pad_token_id)
    name = f"mmlu:{subset}" if subset else "mmlu"
    label = f"{name} ({per_subject}/subject, {'all questions' if half == 'all' else half + ' half'})"
    return ObjectiveData(
        ids, mask, torch.arange(len(encoded)), mask.sum(1) - 1, torch.tensor(letters),
        torch.tensor(scored["answer"].to_numpy()), label, f"{mmlu_fingerprint('mmlu')}:{subset}:{per_subject}:{half}",
    )


def objective_data(loaded, data: str, samples: int, seq_len: int, half: str = "all") -> ObjectiveData:
    """Dataset for an adaptive metric: ``wiki`` / a text file (``samples`` documents of ``seq_len``
    tokens) or ``mmlu[:subset]`` (``samples`` questions per subject, ``half`` of them)."""
    spec = TaskSpec.parse(data).require_scoring_data()
    if spec.is_mmlu:
        return mmlu_objective_data(loaded, spec.subset, samples, half)
    return text_objective_data(loaded, spec.spec, samples, seq_len)


def scored_logits(loaded, hidden: torch.Tensor, data: ObjectiveData) -> torch.Tensor:
    """Next-token logits at the scored positions: ``[P, vocab]`` fp32."""
    return loaded.logits(hidden[data.rows.to(hidden.device), data.positions.to(hidden.device)])


def objective_sum(objective: str, logits: torch.Tensor, reference: torch.Tensor, data: ObjectiveData) -> float:
    """Sum over scored positions of the objective (divide by ``len(data.rows)`` for the mean).

    Args:
        logits: ``[P, vocab]`` :func:`scored_logits` of the pruned model.
        reference: ``[P, vocab]`` :func:`scored_logits` of the full model (used by ``logit``).
    """
    if objective == "logit":
        return (logits - reference).norm(dim=-1).double().sum().item()
    if data.gold is not None:
        letter_logits = logits.gather(1, data.targets.to(logits.device))  # [P, 4]
        return torch.nn.functional.cross_entropy(letter_logits, data.gold.to(logits.device), reduction="sum").double().item()
    return torch.nn.functional.cross_entropy(logits, data.targets.to(logits.device), reduction="sum").double().item()
