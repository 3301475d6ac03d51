"""Entry point of qmtl-engine-kafka for the ``qmtl`` plugin group; registers nothing yet."""
