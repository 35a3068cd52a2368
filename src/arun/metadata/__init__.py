"""Metadata on SQLite: namespaced records of containers, images, content, snapshots, leases."""
