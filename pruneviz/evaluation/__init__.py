"""Evaluation of a model under a pruning plan: Wikipedia perplexity and MMLU (letter and cloze)."""
