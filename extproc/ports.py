"""Checking, before starting, that a process will be able to listen where it is told to.

A bind failure deep inside gRPC, Envoy or an HTTP server surfaces as a traceback or a line in a
log nobody reads; probing first turns it into one clear sentence naming the setting.
"""

from __future__ import annotations

import contextlib
import errno
import socket


class StartupError(Exception):
    """Quorum cannot start; the message is the one line shown to the operator."""


def check_bindable(host: str, port: int, what: str) -> None:
    """Raise StartupError if `host:port` cannot be listened on (in use, or not a local address).

    SO_REUSEADDR as the real servers set it, so a port in TIME_WAIT is not reported as taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port} ({what}): {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
            probe.listen(1)
        except OSError as exc:
            reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise StartupError(f"cannot listen on {host}:{port} ({what}): {reason}") from None


def bindable(host: str, port: int) -> bool:
    with contextlib.suppress(StartupError):
        check_bindable(host, port, "")
        return True
    return False
