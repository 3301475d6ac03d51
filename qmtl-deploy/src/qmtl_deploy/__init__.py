"""qmtl-deploy (work in progress; see the package README)."""

__all__: list[str] = []
