"""Datasets: MMLU questions and plain-text corpora (Wikipedia by default). Imports only :mod:`pruneviz.core`."""
