"""Bilevel training of the reconstruction (outer level) and the hyper-guidance proxy (inner level)."""
