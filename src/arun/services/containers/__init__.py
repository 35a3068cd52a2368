"""The containers service."""
