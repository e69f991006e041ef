"""Errors that carry one sentence a user can act on, and the exit code the CLI maps them to."""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NEEDS_RECONNECT = 3
EXIT_UNAVAILABLE = 4
EXIT_STORAGE = 5
EXIT_REFUSED = 6
EXIT_LOCAL = 7
EXIT_NOT_STORED = 8

_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\x00-\x1f\x7f-\x9f]"
)


# What a terminal or a page may not be handed from outside: controls (Cc), format characters
# such as bidi overrides and zero-width ones (Cf), and line and paragraph separators (Zl, Zp).
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def is_hidden(ch: str) -> bool:
    """Whether `ch` is a character that changes how text around it shows (see HIDDEN_CATEGORIES)."""
    if ch.isprintable():
        # Every Cc, Cf, Zl and Zp character is non-printable; most text stops here.
        return False
    import unicodedata

    return unicodedata.category(ch) in HIDDEN_CATEGORIES


def clean_text(text: str, limit: int = 500) -> str:
    """Strip terminal escapes, controls, bidi and zero-width characters and line separators
    (Unicode Cc, Cf, Zl, Zp) from text that came from outside, and cut it to `limit`."""
    cleaned = _CONTROL.sub("", text)
    if not cleaned.isprintable():
        cleaned = "".join(ch for ch in cleaned if not is_hidden(ch))
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "…"
    return cleaned


def sentence(text: str) -> str:
    """`text` as a sentence: a capital first letter and a full stop."""
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


class XeroTuiError(Exception):
    """Base error: `str(err)` is a sentence fit for the user."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(XeroTuiError):
    exit_code = EXIT_USAGE


class NotFound(XeroTuiError):
    exit_code = EXIT_USAGE


class StorageError(XeroTuiError):
    """The keyring or the secrets file cannot be used."""

    exit_code = EXIT_STORAGE


class TokenNotStored(StorageError):
    """Xero rotated a refresh token and the new one could not be stored: the stored one works
    for Xero's 30-minute grace, and the write has to succeed before that ends."""

    exit_code = EXIT_NOT_STORED


class KeyringUnavailable(StorageError):
    """No keyring can be used at all (none installed or running): `problem` says so alone,
    for a screen that offers its own ways on; the message adds the command line's."""

    def __init__(self, problem: str, ways_on: str) -> None:
        super().__init__(f"{problem} {ways_on}")
        self.problem = problem


class ConfigError(XeroTuiError):
    """The config file cannot be read or written; the message names the file (and line)."""

    exit_code = EXIT_STORAGE


class UnavailableError(XeroTuiError):
    """Xero (or the network to it) did not answer usefully; trying again later may work."""

    exit_code = EXIT_UNAVAILABLE


class NetworkError(UnavailableError):
    pass


class ServerError(UnavailableError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(UnavailableError):
    def __init__(self, message: str, retry_after: float | None, problem: str | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.problem = problem


class OAuthError(XeroTuiError):
    """Xero refused an OAuth request (`error` is the OAuth error code)."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, error: str, description: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.description = description


class NeedsReconnect(OAuthError):
    """The grant is gone (`invalid_grant`): only a new consent fixes it."""

    exit_code = EXIT_NEEDS_RECONNECT


class ApiError(XeroTuiError):
    """The accounting or identity API answered with an error status."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, status: int, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class TokenRejected(ApiError):
    """401 for the access token itself: it may have outlived its grant."""


class TenantNotConnected(ApiError):
    """403 AuthenticationUnsuccessful: the organisation is no longer reachable with this grant."""

    exit_code = EXIT_NEEDS_RECONNECT


class CallbackError(XeroTuiError):
    """The loopback listener could not start or the attempt ended without a code."""

    exit_code = EXIT_REFUSED


class ListenError(CallbackError):
    """This machine cannot listen for the callback: a local problem, not Xero's answer."""

    exit_code = EXIT_LOCAL


class PortInUse(ListenError):
    """`seconds_left`: when the port is held by another xero-tui sign-in that said so."""

    def __init__(self, message: str, port: int, seconds_left: float | None = None) -> None:
        super().__init__(message)
        self.port = port
        self.seconds_left = seconds_left


class ConsentTimeout(CallbackError):
    pass


class ConsentCancelled(CallbackError):
    pass
