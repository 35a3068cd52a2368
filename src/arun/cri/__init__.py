"""The Kubernetes CRI (runtime.v1 RuntimeService and ImageService) on the daemon's socket."""
