"""Entry points: the ``arun`` command line (daemon, config)."""
