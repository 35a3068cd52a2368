"""Container and exec stdio: FIFOs to the shim, the CRI log format, attach fan-out."""
