"""OCI spec options for CRI pods and containers (containerd's ``internal/cri/opts``), on top of
:mod:`arun.oci.spec`."""
