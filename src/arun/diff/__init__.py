"""The walking differ: apply layers to mounts (``archive``), compute layers from two trees (``changes``)."""
