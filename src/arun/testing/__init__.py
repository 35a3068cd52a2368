"""Test helpers shipped with arun (fakes, in-memory protocol pairs, conformance suites).

Nothing under ``src/arun`` imports this package; tests and users' test suites do.
"""
