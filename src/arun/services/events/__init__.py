"""The events service."""
