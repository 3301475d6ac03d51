"""``python -m qmtl``: the ``qmtl`` command (for environments without the console script)."""

from qmtl.cli import main

if __name__ == "__main__":
    main()
