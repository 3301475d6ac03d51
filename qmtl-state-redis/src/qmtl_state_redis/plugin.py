"""Entry point of qmtl-state-redis for the ``qmtl`` plugin group; registers nothing yet."""
