"""The Kubernetes CRI v1 plugin: runtime and image services, and the streaming server."""
