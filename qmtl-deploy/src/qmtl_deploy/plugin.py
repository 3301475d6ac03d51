"""Entry point of qmtl-deploy for the ``qmtl`` plugin group; registers nothing yet."""
