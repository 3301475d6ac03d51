"""Entry point of qmtl-engine-local for the ``qmtl`` plugin group; registers nothing yet."""
