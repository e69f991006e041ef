"""HTTP answers as values, so the emulator's logic stays apart from the socket handling."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from xero_tui.emulator.pages import PAGE_CSP, error_page

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Refused(Exception):
    """Raised inside a request's logic to answer with `reply` instead."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def json_reply(status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(data, separators=(",", ":")).encode()
    return Reply(
        status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    )


def html_reply(status: int, html: str) -> Reply:
    return Reply(
        status,
        html.encode(),
        {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": PAGE_CSP,
            "Referrer-Policy": "no-referrer",
            **NO_STORE,
        },
    )


def redirect(location: str) -> Reply:
    return Reply(302, b"", {"Location": location, **NO_STORE})


def oauth_error(error: str, status: int = 400, description: str | None = None) -> Refused:
    """The token and revocation endpoints' `{"error": ...}` answer."""
    body = (
        {"error": error}
        if description is None
        else {"error": error, "error_description": description}
    )
    return Refused(json_reply(status, body, NO_STORE))


def error_page_reply(message: str, status: int = 500) -> Refused:
    return Refused(html_reply(status, error_page(message)))


def problem(
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    *,
    extensions: bool = True,
) -> Refused:
    """The API's problem-details answer, shaped like Xero's 401/403 bodies."""
    data: dict[str, Any] = {
        "Type": None,
        "Title": title,
        "Status": status,
        "Detail": detail,
        "Instance": str(uuid.uuid4()),
    }
    if extensions:
        data["Extensions"] = {}
    return Refused(json_reply(status, data, headers))


def rate_limited(problem_name: str, retry_after: int | None, headers: dict[str, str]) -> Reply:
    extra = {"X-Rate-Limit-Problem": problem_name, **headers}
    if retry_after is not None:
        extra["Retry-After"] = str(retry_after)
    return problem(429, "Too Many Requests", "Rate limit exceeded", extra).reply
