"""Test helpers shared by arun's suites: fakes, a daemon fixture, raw wire clients.

Nothing under ``src/arun`` outside this package imports it."""
