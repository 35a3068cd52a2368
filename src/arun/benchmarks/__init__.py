"""Benchmarks (not tests). ``python -m arun.benchmarks`` runs them all; each module also runs alone."""
