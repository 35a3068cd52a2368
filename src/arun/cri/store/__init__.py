"""The CRI plugin's in-memory view of its sandboxes and containers.

Records live here for fast reads (kubelet lists and polls statuses every
second); what must survive a daemon restart is also written to the metadata
store (container records with CRI extensions) and, for container statuses, to
a small status file per container, as containerd does.
"""
