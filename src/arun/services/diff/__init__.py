"""The diff service."""
