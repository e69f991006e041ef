"""The HTML a browser sees: the consent page and Xero's error page, self-contained and escaped."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from xero_tui.emulator.model import SCOPE_TEXT, DemoTenant

DECISION_PATH = "/identity/connect/authorize/decision"
# The decision redirects to the app's loopback URL, so form-action must stay open.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"

_STYLE = """
body{font-family:system-ui,sans-serif;background:#f4f6f8;color:#1e2a36;margin:0}
main{max-width:40rem;margin:2rem auto;background:#fff;padding:1.5rem 2rem;border-radius:8px}
.notice{background:#fff4d6;border:1px solid #e0b84c;padding:.6rem .8rem;border-radius:6px}
.error{color:#b3261e;font-weight:600}
ul.orgs{list-style:none;padding:0;max-height:24rem;overflow:auto}
ul.orgs li{padding:.2rem 0}
.type{color:#5b6b7b;font-size:.85em}
button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.6rem}
"""
_NOTICE = (
    "This page comes from the xero-tui local emulator, not from Xero. It stands in for Xero's "
    "consent screen so the app can be tried and tested without a Xero account; no real "
    "organisation is reached."
)


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def error_page(message: str) -> str:
    """Xero's "something went wrong" page; `message` reads like "Error: unauthorized_client : ..."."""
    return _document(
        "Xero | Error",
        "<h1>Sorry, something went wrong</h1>"
        f'<p class="error" id="error-message">{escape(message)}</p>'
        "<p>Go back to the app and check its settings at developer.xero.com.</p>"
        f'<p class="notice">{escape(_NOTICE)}</p>',
    )


def _org_rows(tenants: Iterable[DemoTenant], checked: set[str]) -> str:
    rows = []
    for tenant in tenants:
        tid = escape(tenant.tenant_id)
        mark = " checked" if tenant.tenant_id in checked else ""
        rows.append(
            f'<li><label><input type="checkbox" name="tenant" value="{tid}"{mark}> '
            f"{escape(tenant.name)} "
            f'<span class="type">{escape(tenant.tenant_type)} · {escape(tenant.country_code)}'
            "</span></label></li>"
        )
    return "".join(rows)


def consent_page(
    *,
    app_name: str,
    scopes: Sequence[str],
    tenants: Sequence[DemoTenant],
    checked: set[str],
    request_id: str,
    user_email: str,
    message: str | None = None,
) -> str:
    scope_rows = "".join(
        f"<li>{escape(SCOPE_TEXT.get(scope, scope))} <code>{escape(scope)}</code></li>"
        for scope in scopes
    )
    problem = f'<p class="error" id="consent-error">{escape(message)}</p>' if message else ""
    return _document(
        "Xero | Authorise app",
        f'<p class="notice">{escape(_NOTICE)}</p>'
        f"<h1>{escape(app_name)} wants access to your Xero organisations</h1>"
        f"<p>Signed in as {escape(user_email)}.</p>"
        f"<p>{escape(app_name)} will be able to:</p><ul>{scope_rows}</ul>"
        f"{problem}"
        f'<form method="post" action="{DECISION_PATH}">'
        f'<input type="hidden" name="request_id" value="{escape(request_id)}">'
        f"<h2>Organisations to connect ({len(tenants)})</h2>"
        f'<ul class="orgs">{_org_rows(tenants, checked)}</ul>'
        '<button type="submit" name="decision" value="allow">Allow access</button>'
        '<button type="submit" name="decision" value="cancel">Cancel</button>'
        "</form>",
    )


def index_page(base_url: str) -> str:
    return _document(
        "xero-tui emulator",
        "<h1>xero-tui local Xero emulator</h1>"
        f'<p class="notice">{escape(_NOTICE)}</p>'
        f"<p>Point xero-tui at <code>{escape(base_url)}</code> with the XERO_TUI_LOGIN_URL, "
        "XERO_TUI_IDENTITY_URL and XERO_TUI_API_URL environment variables.</p>",
    )
