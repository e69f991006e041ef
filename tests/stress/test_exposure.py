"""Stress 7: the listener is unreachable on every non-loopback address of this machine; a
replayed callback fails; and after success, timeout and cancel the port is free again, with no
SO_REUSEADDR needed to bind it (security.md 6, 12, 13)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.stress.harness import free_port
from tests.stress.registry import record, timed
from tests.stress.wire import Answer, LoopThread, exchange
from tests.support.capability import missing
from tests.support.net import can_bind_without_reuse
from xero_tui.core.consent import ConnectionDraft
from xero_tui.core.errors import ConsentCancelled, ConsentTimeout
from xero_tui.core.loopback import CONNECTED_TEXT
from xero_tui.core.models import Kind, default_scopes
from xero_tui.core.service import Service
from xero_tui.emulator import Emulator
from xero_tui.emulator.consent import answer_consent

ROUNDS = 12  # each round: one success (real consent), one timeout, one cancel
TIMEOUT = 0.3


def machine_addresses() -> list[tuple[int, tuple[object, ...]]]:
    """Every non-loopback address of this machine, as (family, connect address)."""
    found: dict[str, int] = {}
    if shutil.which("ip"):
        out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=False)
        for iface in json.loads(out.stdout or "[]") if out.returncode == 0 else []:
            for info in iface.get("addr_info", []):
                found.setdefault(info.get("local", ""), int(iface.get("ifindex", 0)))
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_TCP):
            found.setdefault(str(info[4][0]).split("%")[0], 0)
    targets: list[tuple[int, tuple[object, ...]]] = []
    for text, index in sorted(found.items()):
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            continue
        if addr.is_loopback or addr.is_unspecified:
            continue
        if addr.version == 4:
            targets.append((socket.AF_INET, (text, 0)))
        elif not addr.is_link_local or index:
            # A link-local address is reachable only with its interface as the scope.
            targets.append((socket.AF_INET6, (text, 0, 0, index if addr.is_link_local else 0)))
    return targets


def reachable(family: int, address: tuple[object, ...], port: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect((address[0], port, *address[2:]))
        except (ConnectionRefusedError, TimeoutError, OSError):
            return False
        return True


def replay_fails(port: int, target: str) -> bool:
    try:
        answer = exchange(port, f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return answer.status in (None, 400)


def open_page(port: int, target: str, into: list[Answer]) -> None:
    """The browser following the redirect: its request is held until the exchange is done."""
    into.append(exchange(port, f"GET {target} HTTP/1.1\r\n\r\n".encode(), timeout=30))


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def test_machine_has_a_non_loopback_address_to_probe() -> None:
    """Without one, the exposure probes below have nothing to connect to."""
    if not machine_addresses():
        missing("this machine has no non-loopback address to try")


def test_listener_exposure_replay_and_port_release(emu: Emulator, loop: LoopThread) -> None:
    # The replay and port-release checks need no second address; they run whatever the host has.
    targets = machine_addresses()
    client = emu.web_client
    svc = Service()
    broken: list[str] = []
    probes = 0
    outcomes = {"success": 0, "timeout": 0, "cancel": 0}
    with timed() as clock:
        for round_ in range(ROUNDS * 3):
            outcome = ("success", "timeout", "cancel")[round_ % 3]
            redirect = f"http://localhost:{free_port()}/callback"
            emu.register_client(
                client.client_id, client.client_secret, Kind.WEB, redirect_uris=(redirect,)
            )
            draft = ConnectionDraft(
                Kind.WEB,
                client.client_id,
                client.client_secret,
                redirect,
                default_scopes(Kind.WEB),
            )
            wait_for = TIMEOUT if outcome == "timeout" else 30
            session = svc.start_session(draft, f"round {round_}")
            attempt = loop.run(session.begin_consent(timeout=wait_for, allow_launch=False))
            port = attempt.port
            where = f"round {round_} ({outcome}, port {port})"
            for sock in attempt.listener.sockets:
                if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
                    broken.append(f"{where}: listening on {sock.getsockname()[0]}")
            for family, address in targets:
                probes += 1
                if reachable(family, address, port):
                    broken.append(f"{where}: reachable on {address[0]}")
            target = ""
            try:
                if outcome == "success":
                    landed = answer_consent(attempt.url)
                    target = landed.split(f":{port}", 1)[1]
                    page: list[Answer] = []
                    browser = threading.Thread(target=open_page, args=(port, target, page))
                    browser.start()
                    result = loop.run(attempt.wait(), 20)
                    loop.run(session.complete_consent(attempt, result))
                    browser.join(30)
                    if not page or CONNECTED_TEXT.encode() not in page[0].body:
                        broken.append(f"{where}: the page did not say connected")
                elif outcome == "timeout":
                    target = f"{urlsplit(redirect).path}?state={attempt.request.state}&code=late"
                    with pytest.raises(ConsentTimeout):
                        loop.run(attempt.wait(), 10)
                else:
                    target = f"{urlsplit(redirect).path}?state={attempt.request.state}&code=x"
                    # Cancel with a browser connection open: it is reset, the port freed at once.
                    held = socket.create_connection(("127.0.0.1", port), timeout=5)
                    held.sendall(b"GET /callback?sta")
                    loop.run(_cancel(attempt))
                    with pytest.raises(ConsentCancelled):
                        loop.run(attempt.wait(), 10)
                    held.close()
            finally:
                loop.run(attempt.close())
            outcomes[outcome] += 1
            if not can_bind_without_reuse(port):
                broken.append(f"{where}: the port is still taken")
            if not replay_fails(port, target):
                broken.append(f"{where}: a replay of the callback was accepted")
            for family, address in targets:
                probes += 1
                if reachable(family, address, port):
                    broken.append(f"{where}: reachable on {address[0]} after the attempt")
    record(
        "7 exposure",
        f"{sum(outcomes.values())} attempts ({outcomes['success']} real consents, "
        f"{outcomes['timeout']} timeouts, {outcomes['cancel']} cancels), {probes} connects to "
        f"{len(targets)} non-loopback addresses ({', '.join(str(a[0]) for _, a in targets) or 'none'}), "
        "replay and port-free checks after each",
        sum(outcomes.values()),
        len(broken),
        clock.seconds,
    )
    assert not broken, broken[:5]


async def _cancel(attempt: object) -> None:
    attempt.cancel()  # type: ignore[attr-defined]
