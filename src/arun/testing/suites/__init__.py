"""Contract suites that tests run against every implementation of a core protocol."""
