"""The bottom layer: plans and units, architecture adapters, model loading, the plan gates, digests, the
result cache, embedded assets, progress and errors. Imports nothing else from pruneviz."""
