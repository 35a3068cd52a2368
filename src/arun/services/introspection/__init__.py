"""containerd.services.introspection.v1.Introspection: the plugins and the server's identity."""
