"""The CRI ImageService: images of the ``k8s.io`` namespace as kubelet sees them."""
