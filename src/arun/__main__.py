"""``python -m arun`` is the ``arun`` command."""

from arun.cmd.main import main

if __name__ == "__main__":
    raise SystemExit(main())
