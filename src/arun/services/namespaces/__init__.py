"""containerd.services.namespaces.v1.Namespaces: create, inspect, label and delete namespaces."""
