"""Image documents (OCI and Docker schema 2): media types, descriptors, manifests, indexes,
configs, chain IDs and containerd's GC labels. No I/O."""
