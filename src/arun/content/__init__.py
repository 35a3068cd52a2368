"""Content store implementations."""
