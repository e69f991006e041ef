"""The emulator's HTTP server: routing, injected faults, and the `Emulator` handle around it."""

from __future__ import annotations

import contextlib
import json
import shlex
import socket
import socketserver
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from xero_tui.core.endpoints import ENV_API, ENV_IDENTITY, ENV_LOGIN, Endpoints
from xero_tui.core.models import DEFAULT_REDIRECT_URI, Kind
from xero_tui.emulator.model import DemoClient, DemoTenant, EmulatorStats
from xero_tui.emulator.pages import DECISION_PATH
from xero_tui.emulator.replies import Refused, Reply, json_reply, rate_limited
from xero_tui.emulator.state import EmulatorState

DEFAULT_PORT = 8720
MAX_BODY = 1 << 20
ADMIN = "/_emulator/"
# What the `endless` fault sends at most: far more than any Xero answer.
ENDLESS_BYTES = 64 << 20


@dataclass(frozen=True)
class _Request:
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: Message
    base_url: str

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    def form(self) -> dict[str, list[str]]:
        content_type = self.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            raise Refused(json_reply(400, {"error": "invalid_request"}))
        return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)


_Answer = Callable[[EmulatorState, _Request], Reply]
_CONNECTION = "/connections/*"

# path (lower case) -> the endpoint name faults are injected by (None: never faulted),
# and the answer for each method.
_ROUTES: dict[str, tuple[str | None, dict[str, _Answer]]] = {
    "/": (None, {"GET": lambda s, r: s.index(r.base_url)}),
    "/.well-known/openid-configuration": (None, {"GET": lambda s, r: s.discovery(r.base_url)}),
    "/.well-known/openid-configuration/jwks": (None, {"GET": lambda s, r: s.jwks()}),
    "/identity/connect/authorize": ("authorize", {"GET": lambda s, r: s.authorize(r.query)}),
    DECISION_PATH: ("authorize", {"POST": lambda s, r: s.decide(r.form())}),
    "/connect/token": ("token", {"POST": lambda s, r: s.token(r.authorization, r.form())}),
    "/connect/revocation": (
        "revocation",
        {"POST": lambda s, r: s.revoke(r.authorization, r.form())},
    ),
    "/connections": (
        "connections",
        {"GET": lambda s, r: s.list_connections(r.authorization, r.query)},
    ),
    _CONNECTION: (
        "connections",
        {"DELETE": lambda s, r: s.delete_connection(r.authorization, r.path.rsplit("/", 1)[1])},
    ),
    "/api.xro/2.0/organisation": (
        "organisation",
        {"GET": lambda s, r: s.organisation(r.authorization, r.headers.get("xero-tenant-id"))},
    ),
}


def _route_key(path: str) -> str:
    head, _, tail = path.rpartition("/")
    return _CONNECTION if head == "/connections" and tail else path


class Emulator:
    """A local stand-in for Xero's login, identity and API hosts, served from one port.

    The server runs in daemon threads, so it can live inside a test or the TUI; all state sits
    behind one lock. Usable as a context manager (`with Emulator() as emu: ...`).
    """

    def __init__(
        self, port: int = 0, tenants: int = 3, host: str = "127.0.0.1", seed: int = 0
    ) -> None:
        self._state = EmulatorState(tenants=tenants, seed=seed)
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Emulator:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        server = _Server((self._host, self._port), family, self._state)
        self._port = server.server_address[1]
        server.base_url = self.url
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"xero-emulator-{self._port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.stop_serving()
        thread.join()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._port == 0:
            raise RuntimeError("the emulator has not been started")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self._host, self._host)
        return f"http://[{host}]:{self._port}" if ":" in host else f"http://{host}:{self._port}"

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints.single_host(self.url)

    @property
    def env(self) -> dict[str, str]:
        """The variables that point xero-tui at this emulator."""
        return {ENV_LOGIN: self.url, ENV_IDENTITY: self.url, ENV_API: self.url}

    @property
    def web_client(self) -> DemoClient:
        return self._state.web_client

    @property
    def pkce_client(self) -> DemoClient:
        return self._state.pkce_client

    @property
    def custom_client(self) -> DemoClient:
        return self._state.custom_client

    @property
    def tenants(self) -> list[DemoTenant]:
        return list(self._state.tenants)

    def register_client(
        self,
        client_id: str,
        client_secret: str | None,
        kind: Kind | str,
        redirect_uris: tuple[str, ...] = (DEFAULT_REDIRECT_URI,),
        granular: bool = True,
        *,
        name: str | None = None,
    ) -> DemoClient:
        """Add (or replace) an app; a custom connection gets its one organisation connected."""
        return self._state.register_client(
            client_id, client_secret, kind, redirect_uris, granular, name=name
        )

    def inject(
        self,
        endpoint: str,
        kind: str,
        count: int = 1,
        *,
        status: int | None = None,
        delay: float = 0.0,
        retry_after: int | None = None,
        body: bytes | str | None = None,
    ) -> None:
        """Queue `count` one-shot faults for the next requests to `endpoint` ("*": any)."""
        self._state.inject(
            endpoint, kind, count, status=status, delay=delay, retry_after=retry_after, body=body
        )

    def set_fault_rate(
        self,
        endpoint: str,
        kind: str,
        rate: float,
        *,
        seed: int | None = None,
        status: int | None = None,
        delay: float = 0.0,
        retry_after: int | None = None,
    ) -> None:
        """Fault a random fraction `rate` of requests to `endpoint`; rate 0 clears that kind."""
        self._state.set_fault_rate(
            endpoint, kind, rate, seed, status=status, delay=delay, retry_after=retry_after
        )

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's clock forward; returns the total offset from real time."""
        return self._state.advance_clock(seconds)

    @property
    def stats(self) -> EmulatorStats:
        return self._state.stats()

    def current_refresh_token(self, client_id: str, auth_event_id: str | None = None) -> str | None:
        """The refresh token honoured without grace, for one consent or the client's latest."""
        return self._state.current_refresh_token(client_id, auth_event_id)

    def revoke_all(self, client_id: str) -> int:
        """The user removed the app: revoke every grant and connection; returns the grants revoked."""
        return self._state.revoke_all(client_id)

    def disconnect_tenant(self, client_id: str, tenant_id: str) -> bool:
        """The user disconnected one organisation from the app; False if it was not connected."""
        return self._state.disconnect_tenant(client_id, tenant_id)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: int, state: EmulatorState) -> None:
        self.address_family = family
        self.state = state
        self.base_url = ""
        self.stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._resets: set[socket.socket] = set()
        self._guard = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name, which can stall without a network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def track(self, sock: socket.socket, *, add: bool) -> None:
        with self._guard:
            if add:
                self._open.add(sock)
            else:
                self._open.discard(sock)

    def mark_reset(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._guard:
            self._resets.add(sock)

    def shutdown_request(self, request: Any) -> None:
        with self._guard:
            reset = request in self._resets
            self._resets.discard(request)
        if reset:
            # Skipping the polite shutdown makes close() send a TCP reset (SO_LINGER 0).
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def stop_serving(self) -> None:
        """Stop at once, and also wake handlers waiting on idle keep-alive connections."""
        self.stopping.set()
        # shutdown() waits for the serve loop's next poll; shutting the listening socket wakes
        # that loop now (it spins harmlessly on the dead socket until shutdown's flag is seen).
        waiter = threading.Thread(target=self.shutdown)
        waiter.start()
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        waiter.join()
        self.server_close()
        with self._guard:
            open_sockets = list(self._open)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is normal for fault tests; stay quiet.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "xero-tui-emulator"
    sys_version = ""
    timeout = 60
    # Headers and body go out in separate writes; with Nagle on, each answer waits ~40 ms.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: the emulator often runs under a TUI or inside tests."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        # Xero's spec spells paths like /Connections; match them whatever the case.
        path = url.path.rstrip("/").lower() or "/"
        body = self._read_body()
        if body is None:
            return
        if path.startswith(ADMIN):
            self._send(self._admin(method, path[len(ADMIN) :], body))
            return
        route = _ROUTES.get(_route_key(path))
        if route is None:
            self._send(json_reply(404, {"error": "not_found", "path": url.path}))
            return
        endpoint, answers = route
        answer = answers.get(method)
        if answer is None:
            allow = {"Allow": ", ".join(answers)}
            self._send(json_reply(405, {"error": "method_not_allowed"}, allow))
            return
        fault = self.server.state.take_fault(endpoint) if endpoint else None
        if fault is not None:
            if fault.kind == "reset":
                self.server.mark_reset(self.connection)
                self.close_connection = True
                return
            if fault.kind == "status":
                status = fault.status or 500
                self._send(json_reply(status, {"error": "injected_fault", "status": status}))
                return
            if fault.kind == "rate_limit":
                self._send(rate_limited("minute", fault.retry_after, {}))
                return
            if fault.kind == "answer":
                headers = {"Content-Type": "application/json; charset=utf-8"}
                self._send(Reply(fault.status or 200, fault.body, headers))
                return
            if fault.kind == "endless":
                self._send_endless()
                return
            if fault.kind != "trickle":
                self.server.stopping.wait(fault.delay)
        query = parse_qs(url.query, keep_blank_values=True)
        request = _Request(path, query, body, self.headers, self.server.base_url)
        try:
            reply = answer(self.server.state, request)
        except Refused as refused:
            reply = refused.reply
        except Exception:
            # An emulator bug: answer it visibly instead of leaving the client hanging.
            reply = json_reply(500, {"error": "emulator_error", "detail": traceback.format_exc()})
        if fault is not None and fault.kind == "drop_after":
            self.close_connection = True
            return
        if fault is not None and fault.kind == "trickle":
            self._send_trickle(reply, fault.delay)
            return
        self._send(reply)

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering a body this server will not read."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(json_reply(411, {"error": "length_required"}))
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._send(json_reply(413, {"error": "body_too_large"}))
            return None
        return self.rfile.read(length) if length else b""

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def _send_endless(self) -> None:
        """200 and a JSON-looking body with no length, sent until the client hangs up (or, so
        that a client without a cap fails a test instead of the machine, ENDLESS_BYTES)."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        chunk = b" " * 65536
        with contextlib.suppress(OSError):
            self.wfile.write(b"[")
            for _ in range(ENDLESS_BYTES // len(chunk)):
                if self.server.stopping.is_set():
                    return
                self.wfile.write(chunk)

    def _send_trickle(self, reply: Reply, pause: float) -> None:
        """The whole answer, head and body, one byte every `pause` seconds."""
        self.close_connection = True
        head = [f"HTTP/1.1 {reply.status} OK"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        head += [f"Content-Length: {len(reply.body)}", "Connection: close", "", ""]
        data = "\r\n".join(head).encode("latin-1") + reply.body
        with contextlib.suppress(OSError):
            for index in range(len(data)):
                if self.server.stopping.wait(pause):
                    return
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()

    def _admin(self, method: str, action: str, body: bytes) -> Reply:
        """`/_emulator/...`: the Python controls, for a test or person in another process."""
        state = self.server.state
        if method == "GET" and action == "stats":
            return json_reply(200, state.stats().as_dict())
        if method != "POST":
            return json_reply(405, {"error": "method_not_allowed"}, {"Allow": "POST"})
        # Requiring JSON keeps a web page from driving the emulator with a plain form post.
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return json_reply(415, {"error": "send application/json"})
        try:
            args = json.loads(body or b"{}")
            if not isinstance(args, dict):
                raise ValueError("send a JSON object")
            return json_reply(200, _admin_action(state, action, args))
        except KeyError as missing:
            return json_reply(400, {"error": f"missing field {missing}"})
        except (ValueError, TypeError) as exc:
            return json_reply(400, {"error": str(exc)})


def _admin_action(state: EmulatorState, action: str, args: dict[str, Any]) -> dict[str, Any]:
    if action in ("inject", "fault-rate"):
        options = {
            "status": args.get("status"),
            "delay": float(args.get("delay", 0.0)),
            "retry_after": args.get("retry_after"),
            "body": args.get("body"),
        }
        if action == "inject":
            state.inject(args["endpoint"], args["kind"], int(args.get("count", 1)), **options)
        else:
            rate, seed = float(args["rate"]), args.get("seed")
            state.set_fault_rate(args["endpoint"], args["kind"], rate, seed, **options)
        return {"ok": True}
    if action == "clock":
        return {"offset": state.advance_clock(float(args["seconds"]))}
    if action == "revoke-all":
        return {"revoked": state.revoke_all(str(args["client_id"]))}
    if action == "disconnect":
        return {"removed": state.disconnect_tenant(str(args["client_id"]), str(args["tenant_id"]))}
    raise ValueError(f"unknown action {action!r}")


def serve(port: int = DEFAULT_PORT, tenants: int = 3, out: TextIO | None = None) -> None:
    """Run the emulator in the foreground (`xero-tui emulator`) until Ctrl-C.

    Raises OSError when the port cannot be bound and ValueError when `tenants` is below 1.
    """
    out = sys.stdout if out is None else out
    emulator = Emulator(port=port, tenants=tenants).start()
    try:
        out.write(_banner(emulator, tenants))
        out.flush()
        threading.Event().wait()
    except KeyboardInterrupt:
        out.write("\nEmulator stopped.\n")
        out.flush()
    finally:
        emulator.stop()


def _banner(emulator: Emulator, tenants: int) -> str:
    lines = [
        f"Local Xero emulator for xero-tui on {emulator.url} "
        f"({tenants} demo organisation{'s' if tenants != 1 else ''}). Press Ctrl-C to stop.",
        "",
        "Point xero-tui at it:",
        *(f"  export {name}={shlex.quote(value)}" for name, value in emulator.env.items()),
        "",
        "Demo apps it accepts (fake credentials known only to this emulator):",
    ]
    for client in (emulator.web_client, emulator.pkce_client, emulator.custom_client):
        lines.append(f"  {client.kind.label}")
        lines.append(f"    client id:     {client.client_id}")
        lines.append(f"    client secret: {client.client_secret or '(none)'}")
        if client.redirect_uris:
            lines.append(f"    redirect URI:  {', '.join(client.redirect_uris)}")
    lines += [
        "",
        f"Drive it from another process with JSON: GET {emulator.url}{ADMIN}stats; POST to",
        f"  {emulator.url}{ADMIN}inject, fault-rate, clock, revoke-all or disconnect.",
    ]
    return "\n".join(lines) + "\n"
