"""Test helpers: fakes of privileged interfaces and reusable contract suites.

Nothing under ``src/arun`` outside this package imports it.
"""
