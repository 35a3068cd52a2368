"""OCI runtime specs: arun's defaults and the options that shape them."""
