"""The leases service."""
