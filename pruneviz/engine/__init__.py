"""Running the decoder under a plan, fast: prefix reuse, the bounded store of block-boundary states,
packed batches with shared prefixes, and token-level scoring requests. Imports only :mod:`pruneviz.core`."""
