"""Benchmarks of dfd (gateway, pipeline, Triton); each writes its results under benchmarks/results/."""
