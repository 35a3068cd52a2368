"""containerd.services.transfer.v1.Transfer: pull and push inside the daemon (what ctr 2.x uses)."""
