"""Names CRI clients see."""

RUNTIME_NAME = "arun"
# The CRI API version this runtime implements.
RUNTIME_API_VERSION = "v1"
# VersionResponse.version: the kubelet runtime API version, which containerd reports as "0.1.0".
KUBE_API_VERSION = "0.1.0"
# Every CRI object lives in this containerd namespace.
K8S_NAMESPACE = "k8s.io"
