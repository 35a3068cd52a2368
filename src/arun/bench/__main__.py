"""``python -m arun.bench``: the same as ``arun bench``."""

from arun.bench.cli import cli

if __name__ == "__main__":
    raise SystemExit(cli())
