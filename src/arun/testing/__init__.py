"""Test helpers shipped with arun: fakes of privileged or external pieces, in-memory protocol
pairs, clients that behave like upstream ones, and conformance suites.

Nothing under ``src/arun`` outside this package imports it; tests and users' test suites do.
"""
