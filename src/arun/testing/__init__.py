"""Test helpers: fakes of privileged or external pieces, and clients that behave like upstream ones.

Nothing under ``src/arun`` outside this package imports it.
"""
