"""The images service."""
