"""Options of the ``redis`` state backend (pydantic only; no Redis client imported here)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import ConfigDict, Field, SecretStr, field_validator

from qmtl.models import QmtlModel


class RedisStateSettings(QmtlModel):
    """How to reach Redis. ``QMTL_REDIS__URL`` / ``redis_uri=`` fill :attr:`url`.

    Passwords and TLS go through the URL (``rediss://:secret@host:6380/0``) or through
    :attr:`password` / the ``ssl_*`` fields; they never appear in logs or error messages
    (``repr`` masks the URL's password, validation errors omit the input).
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    url: str = Field(
        default="redis://localhost:6379/0",
        description="redis://[user:password@]host:port/db, rediss:// for TLS, or unix:///path",
    )
    username: str | None = Field(default=None, description="ACL user; overrides the URL's")
    password: SecretStr | None = Field(
        default=None, description="Password; overrides the URL's (never logged)"
    )
    max_connections: int = Field(default=50, ge=1, description="Connection pool size")
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to open a connection")
    socket_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for a reply")
    retries: int = Field(
        default=3, ge=0, description="Retries of a command after a dropped connection"
    )
    retry_on_timeout: bool = Field(default=True, description="Also retry after a reply timeout")
    health_check_interval: int = Field(
        default=30, ge=0, description="Seconds idle before a pooled connection is re-checked"
    )
    ssl_ca_certs: str | None = Field(default=None, description="CA bundle for rediss://")
    ssl_cert_reqs: Literal["required", "optional", "none"] = Field(
        default="required", description="Server certificate check for rediss://"
    )
    write_batch: int = Field(
        default=1000, ge=1, description="Bucket writes per server-side script call"
    )

    @field_validator("url")
    @classmethod
    def _check_scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(
                f"URL {mask_url(url)!r} must start with redis://, rediss:// (TLS) or unix://"
            )
        return url

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name == "url" else value


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe to log and to show in errors)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        netloc = f"{user}:***@{host}{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unparsable Redis URL>"
