"""Datasets: MMLU questions and plain-text corpora (Wikipedia by default)."""
