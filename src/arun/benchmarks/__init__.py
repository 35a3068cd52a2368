"""Benchmarks (not tests): ``python -m arun.benchmarks`` runs every ``*_bench`` module here."""
