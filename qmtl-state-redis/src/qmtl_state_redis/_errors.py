"""What to tell a user whose Redis call failed: the fix, chosen by the kind of failure."""

from __future__ import annotations

import redis

_TLS_MARKERS = ("certificate verify failed", "certificate_verify_failed", "wrong version number")


def fix_for(error: Exception) -> str:
    """The fix for ``error`` (a redis-py exception), naming the options to change."""
    detail = str(error).lower()
    if isinstance(error, redis.AuthenticationError):
        return (
            "check the user and password: state options username/password "
            "(QMTL_REDIS__USERNAME, QMTL_REDIS__PASSWORD) or the URL's user:password@"
        )
    if isinstance(error, redis.exceptions.NoPermissionError):
        return (
            "the Redis user lacks a permission QMTL needs: grant it the ACL in "
            "qmtl-state-redis's README (keys ~qmtl*, +@read +@write +@scripting "
            "+@connection +info)"
        )
    if isinstance(error, redis.ConnectionError) and "hostname mismatch" in detail:
        return (
            "the server's TLS certificate does not name the host in the URL: connect by a name "
            "or address the certificate lists, or have the certificate re-issued for it"
        )
    if isinstance(error, redis.ConnectionError) and any(m in detail for m in _TLS_MARKERS):
        return (
            "the TLS handshake failed: with rediss:// point ssl_ca_certs "
            "(QMTL_REDIS__SSL_CA_CERTS) at the CA that signed the server's certificate, and "
            "use redis:// only for a server without TLS"
        )
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return (
            "check that Redis is running and reachable at that URL (state option 'url', "
            "QMTL_REDIS__URL or redis_uri=), and that rediss:// is used for a TLS port"
        )
    return "check that these keys are not used by something else on that Redis"
