"""A scripted browser for the emulator's consent page, used by demo mode and by tests."""

from __future__ import annotations

import functools
import ssl
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx

TIMEOUT = 30.0


@functools.cache
def _tls() -> ssl.SSLContext:
    """Built once: loading the CA bundle takes longer than a whole consent round trip."""
    return httpx.create_ssl_context()


class ConsentError(Exception):
    """The consent page could not be answered; `message` is the page's own error text if any."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _ConsentForm(HTMLParser):
    """The first form of the page, its fields and buttons, and any error message shown."""

    ERROR_IDS = frozenset({"error-message", "consent-error"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.action: str | None = None
        self.hidden: list[tuple[str, str]] = []
        self.checkboxes: list[tuple[str, str, bool]] = []
        self.buttons: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._in_form = False
        self._error_tag: str | None = None
        self._error_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if attr.get("id") in self.ERROR_IDS and self._error_tag is None:
            self._error_tag, self._error_text = tag, []
        if tag == "form" and self.action is None:
            self.action, self._in_form = attr.get("action") or "", True
        if not self._in_form:
            return
        name, value = attr.get("name"), attr.get("value") or ""
        if tag == "input" and name:
            kind = (attr.get("type") or "text").lower()
            if kind == "checkbox":
                self.checkboxes.append((name, value, "checked" in attr))
            elif kind == "hidden":
                self.hidden.append((name, value))
        elif tag == "button" and name:
            self.buttons.append((name, value))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        if tag == self._error_tag:
            self.errors.append(" ".join("".join(self._error_text).split()))
            self._error_tag = None

    def handle_data(self, data: str) -> None:
        if self._error_tag is not None:
            self._error_text.append(data)


def _without_query(url: str) -> str:
    """`url` fit for a message: its query carries the authorization code and state."""
    return urlsplit(url)._replace(query="", fragment="").geturl()


def _read(response: httpx.Response) -> _ConsentForm:
    form = _ConsentForm()
    form.feed(response.text)
    form.close()
    if form.errors:
        raise ConsentError(form.errors[0])
    if response.status_code != 200 or form.action is None:
        raise ConsentError(
            f"{_without_query(str(response.url))} did not show a consent page "
            f"(HTTP {response.status_code})"
        )
    return form


def answer_consent(
    authorize_url: str,
    *,
    allow: bool = True,
    tenant_ids: list[str] | None = None,
    follow_redirect: bool = False,
) -> str:
    """Open the consent page, press Allow (for `tenant_ids`, or the organisations ticked by
    default) or Cancel, and return the redirect it answers with: the app's callback URL with
    `code` and `state`, or with `error`. With `follow_redirect`, also open that URL, as a
    browser would, which delivers it to the app's loopback listener.

    Raises ConsentError with Xero's message when the page is an error page, and with a sentence
    when the page cannot be reached.
    """
    try:
        return _answer(authorize_url, allow, tenant_ids, follow_redirect)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise ConsentError(f"could not reach the consent page: {reason}") from exc


def _answer(
    authorize_url: str, allow: bool, tenant_ids: list[str] | None, follow_redirect: bool
) -> str:
    with httpx.Client(
        verify=_tls(), timeout=TIMEOUT, follow_redirects=False, trust_env=False
    ) as client:
        page = client.get(authorize_url)
        form = _read(page)
        wanted = "allow" if allow else "cancel"
        button = next((b for b in form.buttons if b[1] == wanted), None)
        if button is None:
            raise ConsentError(f"the consent page has no {wanted!r} button")
        fields: dict[str, list[str]] = {}
        for name, value in [*form.hidden, button]:
            fields.setdefault(name, []).append(value)
        if allow and form.checkboxes:
            checkbox_name = form.checkboxes[0][0]
            if tenant_ids is None:
                tenant_ids = [value for _, value, checked in form.checkboxes if checked]
            fields[checkbox_name] = list(tenant_ids)
        answer = client.post(urljoin(str(page.url), form.action), data=fields)
        location = answer.headers.get("Location")
        if answer.status_code not in (301, 302, 303, 307) or not location:
            _read(answer)
            raise ConsentError(f"the consent page did not redirect (HTTP {answer.status_code})")
        location = str(urljoin(str(answer.url), location))
        if follow_redirect:
            try:
                client.get(location)
            except httpx.HTTPError as exc:
                raise ConsentError(
                    f"could not open the redirect to {_without_query(location)}: {exc}"
                ) from exc
        return location
