"""Test helpers shipped with arun: fakes for privileged interfaces, conformance suites.

Nothing under ``src/`` imports this package.
"""
