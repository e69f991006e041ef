"""Checks on what users type, each failing with a sentence that says what is expected."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from xero_tui.core.errors import UsageError, is_hidden

_CLIENT_ID = re.compile(r"[0-9A-Fa-f]{32}")
# Connection names, derived ones (`NAME - Organisation`) included.
MAX_NAME = 80


def check_client_id(value: str) -> str:
    value = value.strip()
    if not _CLIENT_ID.fullmatch(value):
        raise UsageError(
            "A Xero client ID is 32 hexadecimal characters (copy it from developer.xero.com/myapps)."
        )
    return value


def check_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise UsageError("Give the connection a name.")
    # C0 and C1 controls, bidi and zero-width characters and line separators: a name shows as
    # what it is, in every terminal, or it is refused.
    if len(value) > MAX_NAME or any(is_hidden(ch) for ch in value):
        raise UsageError(
            f"A connection name is at most {MAX_NAME} printable characters (no control, bidi, "
            "zero-width or line-separator characters)."
        )
    return value


def check_redirect_uri(value: str) -> str:
    """The loopback redirect URI this machine listens on; it must be registered in the Xero app."""
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme != "http" or parts.hostname is None:
        raise UsageError(
            "The redirect URI must look like http://localhost:8719/callback (Xero allows plain "
            "http only for localhost)."
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname.lower()
    if host not in {"localhost", "127.0.0.1", "::1"}:
        raise UsageError(
            "The redirect URI must point at localhost: xero-tui listens on this machine."
        )
    if port is None or not 1024 <= port <= 65535:
        raise UsageError("The redirect URI needs an explicit port from 1024 to 65535, e.g. :8719.")
    if parts.query or parts.fragment:
        raise UsageError("The redirect URI may not have a query or fragment.")
    if not parts.path or parts.path == "/":
        raise UsageError("The redirect URI needs a path, e.g. /callback.")
    return value


def redirect_uri_note(value: str) -> str | None:
    """A warning for a loopback redirect URI this machine can listen on but Xero may refuse.

    Xero documents only `localhost` for plain-http redirect URIs; whether it accepts 127.0.0.1
    or [::1] is not documented, so such a URI is allowed, with this sentence beside it.
    """
    try:
        parts = urlsplit(value.strip())
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None
    if host not in ("127.0.0.1", "::1"):
        return None
    instead = f"http://localhost{f':{port}' if port else ''}{parts.path}"
    return (
        f"Xero documents only localhost redirect URIs, not {parts.hostname}: if Xero says "
        f"“Invalid redirect_uri”, register and use {instead} instead."
    )
