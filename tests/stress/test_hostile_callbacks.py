"""Stress 6: a barrage of more than 2,000 hostile requests at the loopback listener during
one real consent attempt: generated ones (hypothesis) and scripted ones, many at once, some
half-sent and held open. The listener must stay up, answer each within a bound with one of its
fixed pages (nothing from the request reflected), and the genuine callback that follows must
still complete the attempt (security.md 9-11, 14, 16)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.stress.harness import free_port
from tests.stress.registry import output, record, timed
from tests.stress.wire import Answer, LoopThread, exchange, reflects_nothing
from xero_tui.core import loopback
from xero_tui.core.consent import ConnectionDraft
from xero_tui.core.errors import OAuthError
from xero_tui.core.loopback import CONNECTED_TEXT, CallbackListener
from xero_tui.core.models import Kind, default_scopes
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator
from xero_tui.emulator.consent import answer_consent

GENERATED = 1300
SCRIPTED_ROUNDS = 14
AT_ONCE = 150
HALF_SENT = 16
BOUND = 3.0
HALF_SENT_BOUND = loopback.READ_TIMEOUT + 3.0
PATH = "/callback"
MARKERS = (
    "<script>alert(1)</script>",
    "\x1b[31mred\x1b[0m",
    "\x1b]0;pwned\x07",
    "\x1b[2J\x1b[H",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(document.cookie)",
    "\r\nSet-Cookie: x=1",
    "\u202egnp.exe",
)
STATUSES = {400, 404, 405, 408, 414, 431, 505}


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def request(
    method: str,
    target: str | bytes,
    headers: list[tuple[str, str]] = (),
    *,
    version: str = "HTTP/1.1",
    body: bytes = b"",
) -> bytes:  # type: ignore[assignment]
    raw_target = target if isinstance(target, bytes) else target.encode()
    lines = [method.encode() + b" " + raw_target + b" " + version.encode(), b"Host: localhost"]
    lines += [f"{k}: {v}".encode("latin-1", "replace") for k, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def ends_attempt(method: str, data: bytes, right: str) -> bool:
    """Whether the listener would take this as the genuine callback (never sent in the barrage)."""
    try:
        line = data.split(b"\r\n", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return False
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != "GET":
        return False
    path, _, query = parts[1].partition("?")
    if path != PATH:
        return False
    try:
        params = loopback._parse_query(query.partition("#")[0])
    except ValueError:
        return False
    return params.get("state") == [right]


def scripted(right: str) -> list[tuple[str, bytes]]:
    """One round of hand-written hostile requests: (method, bytes)."""
    code = "c0de-from-an-attacker"
    bad_states = ["", "%20", "wrong", right + "x", right[:-1], right.upper() + "Z"]
    cases: list[tuple[str, bytes]] = [
        ("GET", request("GET", "/favicon.ico")),
        ("GET", request("GET", "/")),
        ("GET", request("GET", "/robots.txt")),
        ("GET", request("GET", PATH, [("Purpose", "prefetch"), ("Sec-Purpose", "prefetch")])),
        ("GET", request("GET", PATH)),
        ("HEAD", request("HEAD", PATH)),
        ("POST", request("POST", f"{PATH}?state={right}&code={code}", body=b"code=x")),
        ("PUT", request("PUT", f"{PATH}?state={right}&code={code}")),
        ("DELETE", request("DELETE", f"{PATH}?state={right}&code={code}")),
        ("OPTIONS", request("OPTIONS", "*")),
        ("GET", request("GET", f"{PATH}/?state={right}&code={code}")),
        ("GET", request("GET", f"/CALLBACK?state={right}&code={code}")),
        ("GET", request("GET", f"{PATH}?code={code}")),
        ("GET", request("GET", f"{PATH}?state={right}&state={right}&code={code}")),
        ("GET", request("GET", f"{PATH}?state=wrong&state={right}&code={code}")),
        ("GET", request("GET", f"{PATH}?state={right}&code={code}&x=%ff%fe")),
        (
            "GET",
            request(
                "GET",
                f"{PATH}?state={right}&code={code}&" + "&".join(f"k{i}=v" for i in range(120)),
            ),
        ),
        ("GET", request("GET", f"{PATH}?error=access_denied")),
        ("GET", b"GET /callback?state=\xff\xfe&code=x HTTP/1.1\r\n\r\n"),
        ("GET", b"GET /callback?state=x&code=y HTTP/2.0\r\n\r\n"),
        ("GET", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64))),
        ("GET", b"\r\n\r\n"),
        ("GET", b"GET /callback HTTP/1.1\r\nno colon\r\n\r\n"),
        ("GET", b"GET /callback HTTP/1.1\r\nHost: x\r\n folded: line\r\n\r\n"),
        ("GET", request("GET", "/" + "a" * 9000)),
        ("GET", request("GET", PATH, [("X-Big", "b" * 70_000)])),
        ("GET", request("GET", PATH, [(f"X-H{i}", "v") for i in range(110)])),
        ("GET", request("GET", "/redirect?to=https://evil.example/")),
    ]
    for state in bad_states:
        cases.append(("GET", request("GET", f"{PATH}?state={state}&code={code}")))
        for marker in MARKERS:
            query = f"error=invalid_request&error_description={quote(marker)}&state={state}"
            cases.append(("GET", request("GET", f"{PATH}?{query}")))
    cases.append(("GET", request("GET", f"{PATH}?error={quote(MARKERS[0])}&state=&code=x")))
    return cases


def check(answer: Answer, where: str, broken: list[str]) -> None:
    if answer.status not in STATUSES:
        broken.append(f"{where}: answered {answer.status}")
    elif not reflects_nothing(answer):
        broken.append(f"{where}: the answer is not one of the fixed pages: {answer.head[:200]!r}")
    elif answer.seconds > BOUND:
        broken.append(f"{where}: answered after {answer.seconds:.1f} s")


def test_hostile_barrage_then_the_genuine_callback_completes(
    emu: Emulator, loop: LoopThread
) -> None:
    client = emu.web_client
    redirect = f"http://localhost:{free_port()}{PATH}"
    emu.register_client(client.client_id, client.client_secret, Kind.WEB, redirect_uris=(redirect,))
    draft = ConnectionDraft(
        Kind.WEB, client.client_id, client.client_secret, redirect, default_scopes(Kind.WEB)
    )
    session = Service().start_session(draft, "genuine")
    attempt = loop.run(session.begin_consent(timeout=300, allow_launch=False))
    listener = attempt.listener
    port, right = attempt.port, attempt.request.state
    broken: list[str] = []
    counts = {"generated": 0, "scripted": 0, "at once": 0, "reset at once": 0, "half-sent": 0}
    slowest = [0.0]

    def alive(where: str) -> None:
        if not listener.sockets or listener._outcome is None or listener._outcome.done():
            broken.append(f"{where}: the attempt ended or the listener stopped")

    with timed() as clock:
        # Half-sent requests, held open through the barrage; each must end in a 408 (or reset).
        half = []
        for index in range(HALF_SENT):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(f"GET {PATH}?state={right}&co".encode()[: 5 + index * 3])
            half.append(sock)

        # Generated requests: any method, path, query, headers and version hypothesis draws.
        text = st.text(max_size=40)
        value = st.sampled_from(MARKERS) | text | st.text(min_size=200, max_size=3000)
        key = st.sampled_from(
            ["code", "error", "error_description", "scope", "session_state", "", "STATE", "state[]"]
        ) | text.filter(lambda k: k != "state")
        states = st.sampled_from(
            [
                [],
                [""],
                [" "],
                ["wrong"],
                [right, right],
                ["x", right],
                [right + "\x00"],
                [right[:-1]],
            ]
        ) | st.lists(text.filter(lambda s: s != right), min_size=1, max_size=3)
        methods = st.sampled_from(
            [
                "GET",
                "GET",
                "GET",
                "HEAD",
                "POST",
                "PUT",
                "DELETE",
                "OPTIONS",
                "get",
                "BREW",
                "G E T",
            ]
        ) | st.from_regex(r"[A-Z]{1,12}", fullmatch=True)
        paths = st.sampled_from(
            [PATH, PATH, PATH, "/", "/favicon.ico", f"{PATH}/", "//callback", "/%63allback", "*"]
        ) | text.map(lambda t: "/" + quote(t))
        headers = st.lists(
            st.tuples(
                st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True),
                st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80),
            ),
            max_size=6,
        )

        @st.composite
        def hostile(draw: st.DrawFn) -> tuple[str, bytes]:
            method = draw(methods)
            pairs = draw(st.lists(st.tuples(key, value), max_size=6))
            pairs += [("state", s) for s in draw(states)]
            pairs = draw(st.permutations(pairs))
            query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
            target = (draw(paths) + ("?" + query if pairs or draw(st.booleans()) else "")).encode()
            tweak = draw(
                st.sampled_from(
                    ["none"] * 6
                    + ["raw marker", "invalid utf-8", "bad percent", "fragment", "huge"]
                )
            )
            if tweak == "raw marker":
                target += draw(st.sampled_from(MARKERS)).encode()
            elif tweak == "invalid utf-8":
                target += b"\xff\xfe\xc3"
            elif tweak == "bad percent":
                target += b"&x=%ff%C3%28%"
            elif tweak == "fragment":
                target += b"#" + quote(draw(text)).encode()
            elif tweak == "huge":
                target += b"&pad=" + b"A" * draw(st.integers(8_000, 200_000))
            version = draw(
                st.sampled_from(["HTTP/1.1"] * 8 + ["HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "http/1.1"])
            )
            extra = draw(headers)
            if draw(st.integers(0, 20)) == 0:
                extra.append(("X-Huge", "h" * draw(st.integers(60_000, 300_000))))
            return method, request(method, target, extra, version=version)

        @settings(
            max_examples=GENERATED,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(hostile())
        def generated(case: tuple[str, bytes]) -> None:
            method, data = case
            assume(not ends_attempt(method, data, right))
            counts["generated"] += 1
            answer = exchange(port, data, method=method, timeout=BOUND)
            slowest[0] = max(slowest[0], answer.seconds)
            where = f"generated request {data[:120]!r}"
            before = len(broken)
            check(answer, where, broken)
            if len(broken) > before:
                raise AssertionError(broken[-1])

        # A failure is recorded in `broken`, after hypothesis shrank it to the simplest request.
        with contextlib.suppress(AssertionError):
            generated()
        alive("after the generated requests")

        # Scripted requests, in rounds.
        for round_ in range(SCRIPTED_ROUNDS):
            for method, data in scripted(right):
                assert not ends_attempt(method, data, right)
                counts["scripted"] += 1
                answer = exchange(port, data, method=method, timeout=BOUND)
                slowest[0] = max(slowest[0], answer.seconds)
                check(answer, f"scripted round {round_} {data[:100]!r}", broken)
            alive(f"after scripted round {round_}")

        # Many at once: past the connection cap the listener resets its oldest idle connection.
        with ThreadPoolExecutor(AT_ONCE) as pool:
            data = request(
                "GET", f"{PATH}?state=wrong&code=x&error_description={quote(MARKERS[0])}"
            )
            answers = list(pool.map(lambda _: exchange(port, data, timeout=BOUND), range(AT_ONCE)))
        for answer in answers:
            counts["at once"] += 1
            slowest[0] = max(slowest[0], answer.seconds)
            if answer.status is None:
                counts["reset at once"] += 1
                if answer.seconds > BOUND:
                    broken.append(f"a reset came after {answer.seconds:.1f} s")
            else:
                check(answer, "one of many at once", broken)
        alive("after many at once")

        # The held half-sent requests end in a 408 within the listener's read timeout.
        for sock in half:
            counts["half-sent"] += 1
            answer = exchange(port, b"", sock=sock, timeout=HALF_SENT_BOUND)
            if answer.status not in (408, None):
                broken.append(f"a half-sent request got {answer.status}")
            elif answer.status == 408 and not reflects_nothing(answer):
                broken.append("the 408 page is not the fixed one")
        alive("after the half-sent requests")

        # The genuine consent still completes, and its page says so.
        landed = answer_consent(attempt.url)
        assert urlsplit(landed).port == port
        page: list[Answer] = []
        browser = threading.Thread(
            target=lambda: page.append(
                exchange(port, request("GET", landed.split(f":{port}", 1)[1]), timeout=30)
            )
        )
        browser.start()
        result = loop.run(attempt.wait(), 20)
        outcome = loop.run(session.complete_consent(attempt, result))
        browser.join(30)
        loop.run(attempt.close())
    sent = sum(counts[k] for k in ("generated", "scripted", "at once", "half-sent"))
    genuine_ok = bool(page) and page[0].status == 200 and CONNECTED_TEXT.encode() in page[0].body
    lost = len(broken) + (not genuine_ok) + (not outcome.tokens.refresh_token)
    record(
        "6 hostile callbacks",
        f"{counts['generated']} generated (hypothesis, derandomized) + {counts['scripted']} "
        f"scripted + {counts['at once']} at once ({counts['reset at once']} idle ones reset "
        f"past the cap) + {counts['half-sent']} half-sent; slowest answer {slowest[0]:.2f} s; then the "
        "genuine callback",
        sent,
        lost,
        clock.seconds,
    )
    assert not broken, broken[:5]
    assert sent >= 2000
    assert genuine_ok, page
    assert outcome.tokens.refresh_token
    assert emu.stats.code_exchanges >= 1


def test_error_with_the_right_state_ends_the_attempt_with_a_clean_message(
    loop: LoopThread,
) -> None:
    state = "St4te-for-the-error-test-0123456789abcdef"
    listener = CallbackListener(f"http://localhost:{free_port()}{PATH}", state, timeout=30)
    loop.run(listener.start())
    description = "".join(MARKERS)
    target = f"{PATH}?error={quote('invalid_scope' + MARKERS[1])}&error_description={quote(description)}&state={state}"
    answer = exchange(listener.port, request("GET", target), timeout=BOUND)
    with pytest.raises(OAuthError) as caught:
        loop.run(listener.wait(), 5)
    message = str(caught.value)
    output("error= callback message", message)
    assert answer.status == 200
    page = answer.body.decode()
    assert "<script>" not in page and "<img" not in page and "\x1b" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in message)
    assert "pwned" not in message  # an OSC title sequence is removed whole
    assert "invalid_scope" in message
    assert "Set-Cookie" not in answer.head.decode("latin-1")
    assert not listener.sockets
