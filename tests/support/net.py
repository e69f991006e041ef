"""Loopback ports for tests that start listeners of their own."""

from __future__ import annotations

import errno
import socket


def free_port() -> int:
    """A loopback port nothing listens on right now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def has_v6_loopback() -> bool:
    """The host can bind ::1 (a container may have IPv6 switched off)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


V6 = has_v6_loopback()


def can_bind_without_reuse(port: int) -> bool:
    """A fresh socket WITHOUT SO_REUSEADDR binds the port: nothing (not even TIME_WAIT) holds it."""
    families = [(socket.AF_INET, "127.0.0.1")] + ([(socket.AF_INET6, "::1")] if V6 else [])
    for family, host in families:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
            try:
                s.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return False
                raise
    return True
