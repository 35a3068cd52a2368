"""The snapshots service."""
