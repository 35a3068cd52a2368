"""Init and exec processes of a container, with their lifecycle states and stdio."""
