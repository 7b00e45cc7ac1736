"""What is built on influence and evaluation: pruning curves and trade-offs, recovery stand-ins, export
and generation. Imports every layer below it, never :mod:`pruneviz.api`, the CLI or the UI."""
