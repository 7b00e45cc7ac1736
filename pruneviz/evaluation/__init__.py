"""Evaluation of a model under a pruning plan: Wikipedia perplexity and MMLU (letter and cloze), the lm-eval
backend, results with their statistics, and the cached entry point. Imports core, engine and data."""
