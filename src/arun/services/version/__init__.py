"""containerd.services.version.v1.Version: the daemon's version and revision."""
