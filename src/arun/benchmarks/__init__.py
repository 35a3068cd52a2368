<<<<<<< HEAD
"""Benchmarks (not tests). ``python -m arun.benchmarks`` runs them all; each module also runs alone."""
=======
"""Benchmarks (not tests): ``python -m arun.benchmarks`` runs every ``*_bench`` module here."""
>>>>>>> main
