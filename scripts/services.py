"""Run a command with throwaway local services (standard library only).

    python scripts/services.py [--redis] [--kafka] -- CMD ARGS...
    python scripts/services.py --redis --print-env      # start by hand; Ctrl-C stops
    python scripts/services.py --redis-tls --kafka-sasl-ssl -- CMD   # the secure pair

Each requested service starts on a free 127.0.0.1 port and its variables
(``QMTL_TEST_REDIS_URL``, ``QMTL_TEST_KAFKA_BOOTSTRAP``, ...) are exported to CMD. A service whose
variable is already set is reused, not started. The services stop when CMD ends, fails or is
interrupted, and the script exits with CMD's exit code.

Every service lives in its own module here (``_redis.py``, ``_kafka.py``) exposing
``start(workdir: pathlib.Path) -> Service`` where ``Service`` has ``env: dict[str, str]`` and
``stop() -> None``. A module is imported only when its service is requested.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# name -> (module, variable that, when set, means "reuse that service")
SERVICES: dict[str, tuple[str, str]] = {
    "redis": ("_redis", "QMTL_TEST_REDIS_URL"),
    "kafka": ("_kafka", "QMTL_TEST_KAFKA_BOOTSTRAP"),
    # The secure pair (_tls.py makes their certificates; needs the `cryptography` package):
    # a TLS-only redis-server with an ACL user, a SASL_SSL (SCRAM-SHA-512) Kafka broker.
    "redis-tls": ("_redis_tls", "QMTL_TEST_REDIS_TLS_URL"),
    "kafka-sasl-ssl": ("_kafka_sasl", "QMTL_TEST_KAFKA_SASL_SSL_BOOTSTRAP"),
}
CHILD_GRACE = 20.0


class _Terminated(Exception):
    """SIGTERM/SIGHUP arrived: unwind so the services are stopped."""


def _on_signal(signum: int, frame: Any) -> None:
    raise _Terminated(signum)


def _say(message: str) -> None:
    print(f"[services] {message}", file=sys.stderr, flush=True)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    command: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        prog="services.py",
        description="Start throwaway Redis/Kafka on loopback, run CMD with their env, stop them.",
        usage="%(prog)s [--redis] [--kafka] [--redis-tls] [--kafka-sasl-ssl] [--print-env] "
        "-- CMD [ARGS...]",
    )
    for name in SERVICES:
        parser.add_argument(f"--{name}", action="store_true", help=f"provide {name}")
    parser.add_argument(
        "--print-env",
        action="store_true",
        help="print export lines for the services and keep them running until Ctrl-C",
    )
    args = parser.parse_args(argv)
    if not command and not args.print_env:
        parser.error("give a command after '--' (or --print-env)")
    return args, command


def _run(command: list[str], env: dict[str, str]) -> int:
    try:
        process = subprocess.Popen(command, env=env)
    except OSError as error:
        _say(f"cannot run {command[0]!r}: {error}")
        return 127
    try:
        return _exit_code(process.wait())
    except KeyboardInterrupt:
        forward = signal.SIGINT
    except _Terminated as stop:
        forward = signal.Signals(stop.args[0])
    # Pass the signal on and give CMD time to finish its own cleanup before the services go.
    if process.poll() is None:
        process.send_signal(forward)
    try:
        return _exit_code(process.wait(CHILD_GRACE))
    except subprocess.TimeoutExpired:
        _say(f"{command[0]} did not stop within {CHILD_GRACE:g}s of {forward.name}; killing it")
        process.kill()
        return _exit_code(process.wait())


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str] | None = None) -> int:
    args, command = _parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="qmtl-services-"))
    env = dict(os.environ)
    started: list[Any] = []
    try:
        for name, (module_name, variable) in SERVICES.items():
            if not getattr(args, name.replace("-", "_")):
                continue
            if os.environ.get(variable):
                _say(f"{name}: reusing {variable}={os.environ[variable]}")
                continue
            _say(f"{name}: starting")
            began = time.monotonic()
            module = importlib.import_module(module_name)
            service = module.start(workdir / name)
            started.append((name, service))
            env.update(service.env)
            shown = " ".join(f"{key}={value}" for key, value in service.env.items())
            _say(f"{name}: ready in {time.monotonic() - began:.1f}s ({shown})")
        if args.print_env:
            for key in sorted(set(env) - set(os.environ)):
                print(f"export {key}={env[key]}", flush=True)
            if not command:
                _say("services running; press Ctrl-C to stop them")
                try:
                    signal.pause()
                except (KeyboardInterrupt, _Terminated):
                    pass
                return 0
        return _run(command, env)
    except (KeyboardInterrupt, _Terminated):
        return 130
    except Exception as error:  # a service failed to start: report it, still clean up
        _say(f"{type(error).__name__}: {error}")
        return 1
    finally:
        for name, service in reversed(started):
            try:
                service.stop()
                _say(f"{name}: stopped")
            except Exception as error:
                _say(f"{name}: stop failed: {type(error).__name__}: {error}")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
