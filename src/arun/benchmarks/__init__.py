"""Benchmarks (not tests): ``python -m arun.benchmarks.<name>``."""
