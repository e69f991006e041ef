"""Command line: `xero-tui` starts the TUI; the subcommands serve scripts and never import Textual."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from xero_tui import __version__
from xero_tui.core.errors import (
    EXIT_ERROR,
    EXIT_NEEDS_RECONNECT,
    EXIT_OK,
    EXIT_USAGE,
    CallbackError,
    UsageError,
    XeroTuiError,
    clean_text,
)
from xero_tui.core.models import DEFAULT_REDIRECT_URI, Kind, Tenant, default_scopes

# asyncio and getpass are imported by the commands that use them: a cached
# `token` needs none, and asyncio alone costs about a quarter of that command's time.

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from xero_tui.core.config import Config
    from xero_tui.core.connect import ConnectSession
    from xero_tui.core.consent import ConnectionDraft, ConsentAttempt
    from xero_tui.core.context import Context
    from xero_tui.core.loopback import CallbackResult
    from xero_tui.core.secrets import SecretStore
    from xero_tui.core.service import Service

T = TypeVar("T")

EXIT_CODES = """exit codes:
  0  success
  1  other error
  2  usage error (bad arguments, unknown connection name)
  3  needs reconnect (Xero no longer accepts the grant, or the organisation was disconnected)
  4  network or Xero unavailable (timeouts, 5xx, rate limits)
  5  storage unavailable (keyring locked or missing, config unreadable or unwritable, the
     shared store unreachable or its key missing or wrong)
  6  Xero refused the request or the consent did not complete (cancelled, bad client, bad scope)
  7  local problem (the callback port is taken or cannot be used on this machine)
  8  a refresh token Xero replaced could not be stored: the stored one works for 30 more
     minutes; fix the storage and run the command again before the time it names
  129, 143  stopped by a hang-up (SIGHUP) or SIGTERM; as with Ctrl-C, what Xero issued or
            rotated is stored first
  130  interrupted (Ctrl-C)

An interrupted connect keeps what Xero issued: `xero-tui connect NAME` again finishes it without
a new sign-in, and `xero-tui remove NAME` discards it.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        if message.startswith("unrecognized arguments") and "--demo" in message.split():
            message += " (--demo starts the app against the built-in emulator: give no command)"
        self.exit(EXIT_USAGE, f"xero-tui: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="xero-tui",
        description="Create and keep Xero OAuth 2.0 connections. Without a command, starts the app.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"xero-tui {__version__}")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run the app against a built-in Xero emulator with a throwaway config",
    )
    insecure_help = "keep secrets in a 0600 secrets.toml beside the config instead of the keyring"
    parser.add_argument("--insecure-storage", action="store_true", help=insecure_help)
    store_help = (
        "use the shared store at URL (postgresql://user@host:5432/dbname) instead of the one "
        "config.toml or XERO_TUI_STORE names"
    )
    parser.add_argument("--store", metavar="URL", default=None, help=store_help)
    # The same flags after the command: left unset there unless given, so the ones before hold.
    storage = _Parser(add_help=False)
    storage.add_argument(
        "--insecure-storage", action="store_true", default=argparse.SUPPRESS, help=insecure_help
    )
    storage.add_argument("--store", metavar="URL", default=argparse.SUPPRESS, help=store_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    connect = sub.add_parser(
        "connect",
        parents=[storage],
        help="sign in to Xero and save a connection (or reconnect a saved one)",
        description=(
            "Sign in to Xero and save one connection per chosen organisation. The client secret "
            "comes from XERO_CLIENT_SECRET or a prompt, never from an argument. Naming a saved "
            "connection reconnects it with its saved settings."
        ),
    )
    connect.add_argument("name")
    connect.add_argument("--client-id", help="the app's client ID from developer.xero.com/myapps")
    connect.add_argument("--kind", choices=[k.value for k in Kind], default=None)
    connect.add_argument("--scopes", nargs="+", metavar="SCOPE", help="scopes to ask for")
    connect.add_argument(
        "--legacy-scopes",
        action="store_true",
        help="ask for the broad scopes of apps created before 2 March 2026",
    )
    connect.add_argument("--redirect-uri", default=None, help=f"default {DEFAULT_REDIRECT_URI}")
    connect.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="ID|NAME",
        help="organisation to save (repeatable); default: the ones this consent granted",
    )
    connect.add_argument("--no-browser", action="store_true", help="print the URL only")
    connect.add_argument(
        "--no-pkce", action="store_true", help="web apps only: do not send a PKCE challenge"
    )
    connect.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=300.0,
        help="seconds to wait for consent (default 300)",
    )

    listing = sub.add_parser("list", parents=[storage], help="list saved connections")
    listing.add_argument("--json", action="store_true")

    token = sub.add_parser(
        "token", parents=[storage], help="print a valid access token (refreshed when needed)"
    )
    token.add_argument("name")
    fmt = token.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument(
        "--env", action="store_true", help="print XERO_ACCESS_TOKEN=... and XERO_TENANT_ID=..."
    )
    token.add_argument("--force-refresh", action="store_true")

    status = sub.add_parser("status", parents=[storage], help="health of saved connections")
    status.add_argument("name", nargs="?")
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--offline", action="store_true", help="do not ask Xero whether organisations are connected"
    )

    remove = sub.add_parser(
        "remove",
        parents=[storage],
        help="delete a saved connection, or discard an unfinished sign-in",
    )
    remove.add_argument("name")
    remove.add_argument(
        "--disconnect",
        action="store_true",
        help="also remove the organisation's connection at Xero",
    )
    remove.add_argument(
        "--revoke",
        action="store_true",
        help="also revoke the grant at Xero (skipped while other connections share it)",
    )

    handover = sub.add_parser(
        "export",
        parents=[storage],
        help="hand a connection over to another tool (client ID, secret, refresh token, tenant)",
        description=(
            "Print what another tool needs to go on with a connection. A rotating refresh token "
            "can have only one keeper, so by default xero-tui then forgets it here (with the "
            "connections sharing it); --keep exports a copy instead. The secrets go to stdout "
            "or to --output FILE (made 0600), and to a terminal only with --to-terminal."
        ),
    )
    handover.add_argument("name")
    handover.add_argument("--format", choices=["env", "json", "tap-xero"], default="env")
    handover.add_argument("--output", metavar="FILE", help="write it to FILE, made 0600")
    handover.add_argument(
        "--keep", action="store_true", help="a copy: keep the connection here too (risky)"
    )
    handover.add_argument(
        "--yes", action="store_true", help="hand over without asking (needed without a terminal)"
    )
    handover.add_argument(
        "--to-terminal", action="store_true", help="print the secrets even to a terminal"
    )

    keepalive = sub.add_parser(
        "keepalive",
        parents=[storage],
        help="refresh connections not refreshed for a while, so Xero's 60 days never run out",
        description=(
            "Refresh every connection whose sign-in was last refreshed more than --older-than "
            "days ago (a refresh token unused for 60 days dies at Xero); one line each. Exit 3 "
            "when any needs reconnecting. --install runs it daily from a systemd user timer, "
            "or prints the crontab line to add where no systemd user session answers."
        ),
    )
    keepalive.add_argument(
        "--older-than",
        type=_positive_days,
        default=30.0,
        metavar="DAYS",
        help="refresh those last refreshed more than DAYS ago (default 30)",
    )
    schedule = keepalive.add_mutually_exclusive_group()
    schedule.add_argument(
        "--install",
        action="store_true",
        help="run keepalive daily, with these options and this config folder",
    )
    schedule.add_argument(
        "--uninstall", action="store_true", help="stop and remove the daily timer"
    )

    shared = sub.add_parser(
        "store",
        help="share connections between hosts through a PostgreSQL store",
        description=(
            "A shared store keeps connections, sign-ins and statuses in PostgreSQL, and the "
            "secrets there encrypted with a key each host keeps itself. Choose it with "
            '--store URL, XERO_TUI_STORE or store = "URL" in config.toml.'
        ),
    )
    store_sub = shared.add_subparsers(
        dest="store_command", metavar="ACTION", parser_class=_Parser, required=True
    )
    store_sub.add_parser("init", parents=[storage], help="create the tables (done on first use)")
    store_sub.add_parser(
        "push",
        parents=[storage],
        help="move this host's connections and secrets into the store, then use it",
    )
    store_sub.add_parser(
        "pull",
        parents=[storage],
        help="move the store's connections and secrets to this host, and stop using it",
    )
    key = store_sub.add_parser(
        "key",
        parents=[storage],
        help="make this host's store key, or copy, import or rotate it",
        description=(
            "Without an option: make the key if neither this host nor the store has one, and "
            "say where it is. To copy it to another host: "
            "xero-tui store key --export | ssh OTHER-HOST xero-tui store key --import"
        ),
    )
    key_action = key.add_mutually_exclusive_group()
    key_action.add_argument(
        "--export", action="store_true", help="print the key, for a pipe to another host"
    )
    key_action.add_argument(
        "--import", dest="import_", action="store_true", help="read a key from stdin and keep it"
    )
    key_action.add_argument(
        "--rotate", action="store_true", help="re-encrypt every secret under a new key"
    )
    key.add_argument("--to-terminal", action="store_true", help="--export even to a terminal")

    emulator = sub.add_parser("emulator", help="run the local Xero emulator (for demos and tests)")
    emulator.add_argument("--port", type=_bounded(0, 65535), default=8720)
    emulator.add_argument(
        "--tenants", type=_bounded(1, 100_000), default=3, help="organisations of the demo user"
    )
    return parser


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}")
        return value

    return parse


def _positive_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not 0 <= value < 60:
        raise argparse.ArgumentTypeError("must be from 0 to under 60 days (Xero's limit)")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 86400 seconds")
    return value


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _service(args: argparse.Namespace) -> Service:
    from xero_tui.core.service import Service

    return Service(insecure_storage=args.insecure_storage, store_url=args.store)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        from xero_tui.app import run

        return run(demo=args.demo, insecure_storage=args.insecure_storage, store_url=args.store)
    if args.command == "emulator":
        from xero_tui.emulator import serve

        try:
            serve(args.port, args.tenants)
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            _err(f"xero-tui: cannot start the emulator on port {args.port}: {exc.strerror}.")
            return EXIT_ERROR
        return EXIT_OK
    from xero_tui.core.endpoints import Endpoints

    notice = Endpoints.from_env().override_notice()
    if notice:
        _err(f"xero-tui: {notice}")
    handler = {
        "connect": cmd_connect,
        "list": cmd_list,
        "token": cmd_token,
        "status": cmd_status,
        "remove": cmd_remove,
        "keepalive": cmd_keepalive,
        "export": cmd_export,
        "store": cmd_store,
    }[args.command]
    try:
        return handler(args)
    except XeroTuiError as exc:
        _err(f"xero-tui: {clean_text(str(exc), 2000)}")
        return exc.exit_code
    except KeyboardInterrupt:
        _err("xero-tui: cancelled.")
        return 130
    except _Stopped as stop:
        _err("xero-tui: stopped.")
        return 128 + stop.signum
    except Exception as exc:
        if os.environ.get("XERO_TUI_DEBUG"):
            raise
        # The text of an unexpected error could carry anything; its type is enough to report.
        _err(f"xero-tui: unexpected {type(exc).__name__}; rerun with XERO_TUI_DEBUG=1 to see why.")
        return EXIT_ERROR


def _iso(ts: datetime | float | None) -> str | None:
    if ts is None:
        return None
    if isinstance(ts, float):
        ts = datetime.fromtimestamp(ts, UTC)
    return ts.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# list ---------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    svc = _service(args)
    config = svc.load()
    storage = svc.storage_kind(config)
    rows = [
        {
            "name": c.name,
            "organisation": c.tenant_name,
            "tenant_id": c.tenant_id,
            "tenant_type": c.tenant_type,
            "kind": c.kind.value,
            "client_id": c.client_id,
            "status": c.status.value,
            "storage": storage,
            "last_refreshed": _iso(c.last_refreshed),
        }
        for c in sorted(config.connections.values(), key=lambda c: c.name.casefold())
    ]
    _say_pending(config)
    _say_left_behind(svc, config)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    if not rows:
        _err("No connections saved yet. Create one with `xero-tui` or `xero-tui connect NAME`.")
        return EXIT_OK
    _table(
        ["NAME", "ORGANISATION", "KIND", "STATUS", "SECRETS"],
        [
            [
                r["name"],
                r["organisation"],
                r["kind"],
                str(r["status"]).replace("_", " "),
                r["storage"],
            ]
            for r in rows
        ],
    )
    return EXIT_OK


def _say_left_behind(svc: Context, config: Config) -> None:
    """With a shared store in use, connections config.toml still holds of its own are unused:
    said on stderr, with the way to move them."""
    if config.store is None:
        return
    local = svc.local.load()
    kept = len(local.connections) + len(local.pending)
    if kept:
        plural = "s" if kept != 1 else ""
        _err(
            f"xero-tui: {svc.paths.config_file} still holds {kept} connection{plural} or sign-in"
            f"{plural} of its own, unused while the shared store is: `xero-tui store push` "
            "moves them there."
        )


def _say_pending(config: Config) -> None:
    """Unfinished sign-ins, on stderr: what scripts read from stdout stays connections only."""
    if not config.pending:
        return
    from xero_tui.core.connect import pending_sentence, pending_sign_ins

    for pending in pending_sign_ins(config):
        _err(pending_sentence(pending))


def _table(header: list[str], rows: list[list[Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    cells = [[clean_text(str(v), 60) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    for row in [header, *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


# token --------------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    # The tokens module alone: a cached token needs no other use case's code.
    from xero_tui.core import tokens as token_module
    from xero_tui.core.context import Context

    ctx: Context = Context(insecure_storage=args.insecure_storage, store_url=args.store)
    found = None if args.force_refresh else token_module.cached_token(ctx, args.name)
    if found is None:
        found = _run(token_module.access_token(ctx, args.name, force=args.force_refresh))
    conn, tokens = found
    if args.json:
        json.dump(
            {
                "access_token": tokens.access_token,
                "token_type": "Bearer",
                "expires_at": _iso(tokens.expires_at),
                "tenant_id": conn.tenant_id,
                "tenant_name": conn.tenant_name,
            },
            sys.stdout,
        )
        sys.stdout.write("\n")
    elif args.env:
        print(f"XERO_ACCESS_TOKEN={shlex.quote(tokens.access_token)}")
        print(f"XERO_TENANT_ID={shlex.quote(conn.tenant_id)}")
    else:
        print(tokens.access_token)
    _warn_loose(ctx.secrets)
    return EXIT_OK


def _warn_loose(store: SecretStore) -> None:
    warning = store.take_warning()
    if warning:
        _err(f"xero-tui: {warning}")


# status -------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    svc = _service(args)
    names = [args.name] if args.name else None
    health = svc.health(names)
    _err(f"Secrets are stored in: {svc.secrets.description}")
    _warn_loose(svc.secrets)
    if not args.name:
        config = svc.load()
        _say_pending(config)
        _say_left_behind(svc, config)
    if not args.offline:
        health = [h.checked(_run(_still_connected(svc, h.connection.name))) for h in health]
    worst = EXIT_OK
    rows = []
    for h in health:
        conn = h.connection
        rows.append(
            {
                "name": conn.name,
                "organisation": conn.tenant_name,
                "kind": conn.kind.value,
                "status": h.label,
                "storage": h.storage,
                "access_token_expires": _iso(h.access_expires_at),
                "refresh_token_age_days": None
                if h.refresh_age_days is None
                else round(h.refresh_age_days, 1),
                "refresh_token_days_left": None
                if h.refresh_days_left is None
                else round(h.refresh_days_left, 1),
                "organisation_connected": h.connected if isinstance(h.connected, bool) else None,
            }
        )
        if h.needs_reconnect:
            worst = EXIT_NEEDS_RECONNECT
        elif h.severity == "error":
            worst = max(worst, EXIT_ERROR)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif rows:
        _table(
            ["NAME", "ORGANISATION", "STATUS", "TOKEN EXPIRES", "REFRESH TOKEN AGE"],
            [
                [
                    r["name"],
                    r["organisation"],
                    r["status"],
                    r["access_token_expires"] or "-",
                    "-"
                    if r["refresh_token_age_days"] is None
                    else f"{r['refresh_token_age_days']} of 60 days",
                ]
                for r in rows
            ],
        )
    else:
        _err("No connections saved yet.")
    return worst


async def _still_connected(svc: Service, name: str) -> bool | str:
    try:
        return await svc.still_connected(name)
    except XeroTuiError as exc:
        return clean_text(str(exc), 200)


# remove -------------------------------------------------------------------------------------


def cmd_remove(args: argparse.Namespace) -> int:

    svc = _service(args)
    config = svc.load()
    if args.name not in config.connections:
        from xero_tui.core.connect import discard, find_pending

        pending = find_pending(config, args.name)
        if pending is not None:
            print(_run(discard(svc, pending)))
            return EXIT_OK
    removal = _run(svc.removal(args.name, disconnect=args.disconnect, revoke=args.revoke))
    print(removal.done_text)
    for missed in removal.not_done:
        _err(f"xero-tui: {missed}.")
    if not removal.not_done:
        return EXIT_OK
    return EXIT_NEEDS_RECONNECT if removal.needs_reconnect else EXIT_ERROR


# keepalive ----------------------------------------------------------------------------------


def cmd_keepalive(args: argparse.Namespace) -> int:
    if args.install or args.uninstall:
        return _keepalive_schedule(args)

    from xero_tui.core.keepalive import keep_alive

    svc = _service(args)
    results = _run(keep_alive(svc, args.older_than))
    if not results:
        _err("No connections saved yet.")
    for kept in results:
        print(kept.line)
    if any(kept.needs_reconnect for kept in results):
        return EXIT_NEEDS_RECONNECT
    return EXIT_ERROR if any(kept.outcome == "failed" for kept in results) else EXIT_OK


def _keepalive_schedule(args: argparse.Namespace) -> int:
    from xero_tui.core import schedule

    host = schedule.probe()
    if args.install:
        job = schedule.Job.for_this_run(
            args.older_than, insecure_storage=args.insecure_storage, store_url=args.store
        )
        lines = schedule.install(job, host)
    else:
        lines = schedule.uninstall(schedule.unit_dir(), host)
    for line in lines:
        print(line)
    return EXIT_OK


# export -------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xero_tui.core.fsutil import atomic_write
    from xero_tui.core.handover import Export, export

    if args.output is None and sys.stdout.isatty() and not args.to_terminal:
        raise UsageError(
            "The export holds secrets, and would stay in this terminal's scrollback: write it "
            "with --output FILE (made 0600), pipe it to the other tool, or add --to-terminal."
        )
    svc = _service(args)
    conn = svc.connection(args.name)
    handing_over = not args.keep and conn.kind is not Kind.CUSTOM
    if handing_over and not args.yes:
        _confirm_handover(args.name)

    def deliver(handed: Export) -> None:
        text = handed.render(args.format)
        if args.output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            atomic_write(Path(args.output), text.encode())

    handed = export(svc, args.name, deliver, keep=not handing_over)
    if handed.forgotten:
        _err(
            f"Handed over {args.name!r}: the other tool now holds the only refresh token, and "
            f"xero-tui has forgotten {', '.join(repr(n) for n in handed.forgotten)}."
        )
    elif conn.kind is not Kind.CUSTOM:
        _err(
            f"xero-tui: a copy: {args.name!r} is still kept and refreshed here. Whichever copy "
            "refreshes first breaks the other (Xero rotates refresh tokens): use it to move the "
            "connection, then remove it here."
        )
    return EXIT_OK


def _confirm_handover(name: str) -> None:
    if not sys.stdin.isatty():
        raise UsageError(
            f"Handing {name!r} over makes xero-tui forget its refresh token: add --yes to "
            "confirm, or --keep for a copy."
        )
    _err(
        f"Hand {name!r} over? xero-tui then forgets its refresh token and the connections "
        "sharing it, since only one keeper may refresh it."
    )
    # The question goes to stderr: stdout may be the pipe to the other tool.
    sys.stderr.write("Type yes to hand it over: ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() != "yes":
        raise UsageError("Not handed over; nothing was exported.")


# store --------------------------------------------------------------------------------------


def cmd_store(args: argparse.Namespace) -> int:
    from xero_tui.core import sharing, storekey

    svc = _service(args)
    url = svc.shared_url()
    if url is None:
        raise UsageError(
            "No shared store is set: give --store postgresql://user@host:5432/dbname, or set "
            'XERO_TUI_STORE, or store = "..." in config.toml.'
        )
    address, db = svc.shared(url)
    action = args.store_command
    if action == "init":
        db.set_up()
        print(f"The tables of {address.description} are ready.")
        return EXIT_OK
    if action == "push":
        moved = sharing.push(svc, url)
        print(moved.summary())
        if moved.key is not None and moved.key.created:
            print(f"Made the store key and kept it in the {moved.key.where}.")
        print(
            'Each other host needs the store (store = "URL" in its config.toml, or '
            "XERO_TUI_STORE) and the key, copied from here:"
        )
        quoted = shlex.quote(url)
        print(
            f"  xero-tui store key --export | ssh OTHER-HOST xero-tui --store {quoted} "
            "store key --import"
        )
        return EXIT_OK
    if action == "pull":
        moved = sharing.pull(svc)
        print(moved.summary())
        if svc.store_url is not None:
            print("The store is still named by --store or XERO_TUI_STORE: drop it to use these.")
        return EXIT_OK
    local = svc.local_secrets()
    if args.export:
        if sys.stdout.isatty() and not args.to_terminal:
            raise UsageError(
                "The key opens every secret in the store, and would stay in this terminal's "
                f"scrollback: pipe it ({storekey.COPY_HINT}), or add --to-terminal."
            )
        keys = storekey.local_keys(address, lambda: local)
        sys.stdout.write(",".join(k.decode("ascii") for k in keys) + "\n")
        return EXIT_OK
    if args.import_:
        if sys.stdin.isatty():
            import getpass

            text = getpass.getpass("Store key (hidden): ")
        else:
            text = sys.stdin.read(4096)
        where = storekey.import_key(db, local, text)
        print(f"Kept the key for {address.description} in the {where}.")
        return EXIT_OK
    if args.rotate:
        count = storekey.rotate_key(db, local)
        print(
            f"Re-encrypted {count} secret{'s' if count != 1 else ''} in {address.description} "
            f"under a new key, kept in the {local.description}. Other hosts need it now: "
            f"{storekey.COPY_HINT}."
        )
        return EXIT_OK
    state = storekey.ensure_key(db, local)
    if state.created:
        print(f"Made a new key for {address.description}, kept in the {state.where}.")
    else:
        print(f"The key for {address.description} is in the {state.where}.")
    print(f"To copy it to another host: {storekey.COPY_HINT}")
    return EXIT_OK


# connect ------------------------------------------------------------------------------------


class _Stopped(Exception):
    """SIGTERM or SIGHUP arrived while a command was waiting on Xero, the browser or a store;
    the command ends with 128 + the signal's number, as a shell reports a signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _run(work: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, ended cleanly by SIGTERM and SIGHUP as Ctrl-C ends it: the main task is
    cancelled, so a held browser page is answered and a token Xero issued is stored first."""
    import asyncio
    import signal

    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        received: list[int] = []

        def stop(signum: int) -> None:
            received.append(signum)
            task.cancel()

        stops = (signal.SIGTERM, signal.SIGHUP)
        for signum in stops:
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await work
        except asyncio.CancelledError:
            if received:
                raise _Stopped(received[0]) from None
            raise
        finally:
            for signum in stops:
                loop.remove_signal_handler(signum)

    return asyncio.run(main())


def _read_secret(kind: Kind, stored: str | None = None) -> str | None:
    if not kind.has_secret:
        return None
    secret = os.environ.get("XERO_CLIENT_SECRET")
    if secret:
        return secret.strip()
    if stored:
        return stored
    if not sys.stdin.isatty():
        raise UsageError(
            "This app type needs its client secret: set XERO_CLIENT_SECRET or run in a terminal "
            "to be prompted (it is never taken as an argument)."
        )
    import getpass

    secret = getpass.getpass("Client secret (input hidden): ").strip()
    if not secret:
        raise UsageError("No client secret given.")
    return secret


def _draft(args: argparse.Namespace, config: Config) -> tuple[ConnectionDraft, bool]:
    """The app as the arguments (or the saved connection being reconnected) describe it, without
    its secret yet; and whether this reconnects a saved connection."""
    from xero_tui.core.connect import clone_draft
    from xero_tui.core.consent import ConnectionDraft
    from xero_tui.core.validate import check_client_id, check_name, check_redirect_uri

    check_name(args.name)
    if args.name in config.connections and not args.client_id:
        conn = config.connections[args.name]
        _err(f"Reconnecting {args.name!r} ({clean_text(conn.tenant_name, 100)}).")
        return clone_draft(conn, None), True
    if args.name in config.connections:
        raise UsageError(
            f"A connection named {args.name!r} already exists: omit --client-id to reconnect it, "
            "or choose another name."
        )
    if not args.client_id:
        raise UsageError("--client-id is required for a new connection.")
    kind = Kind(args.kind or "web")
    client_id = check_client_id(args.client_id)
    redirect = check_redirect_uri(args.redirect_uri or DEFAULT_REDIRECT_URI)
    scopes = tuple(args.scopes) if args.scopes else default_scopes(kind, args.legacy_scopes)
    if kind is Kind.CUSTOM and args.no_pkce:
        raise UsageError("--no-pkce applies to web apps only.")
    return ConnectionDraft(kind, client_id, None, redirect, scopes, not args.no_pkce), False


def cmd_connect(args: argparse.Namespace) -> int:
    from xero_tui.core.connect import ConnectSession, find_pending, pending_sentence

    svc = _service(args)
    config = svc.load()
    pending = find_pending(config, args.name)
    if pending is not None and args.client_id and args.client_id.strip() != pending.client_id:
        raise UsageError(
            f"An unfinished sign-in named {args.name!r} is for another app: finish it without "
            f"--client-id, or discard it with `xero-tui remove {args.name!r}` first."
        )
    if pending is not None:
        session = ConnectSession.resume(svc, pending)
    else:
        draft, reconnect = _draft(args, config)
        session = ConnectSession.start(svc, draft, args.name, reconnect=reconnect, config=config)
    try:
        if pending is not None:
            issued = pending.issued.astimezone().strftime("%H:%M on %Y-%m-%d")
            _err(
                f"Finishing the sign-in for {args.name!r} that Xero answered at {issued}; "
                "no new sign-in is needed."
            )
            _run(session.organisations())
        else:
            _sign_in(session, args)
        chosen = _choose(args, session)
        saved = session.save(chosen)
    except KeyboardInterrupt:
        return _stopped(session, "cancelled", 130)
    except _Stopped as stop:
        return _stopped(session, "stopped", 128 + stop.signum)
    except XeroTuiError as exc:
        if session.pending is None:
            raise
        _err(f"xero-tui: {clean_text(str(exc), 2000)}")
        _err(f"xero-tui: {pending_sentence(session.pending)}")
        return exc.exit_code
    for conn in saved:
        print(f"Saved {conn.name!r}: {clean_text(conn.tenant_name, 200)} ({conn.tenant_id})")
    _err(f"Secrets are stored in: {svc.secrets.description}")
    _warn_loose(svc.secrets)
    return EXIT_OK


def _stopped(session: ConnectSession, how: str, code: int) -> int:
    from xero_tui.core.connect import pending_sentence

    if session.pending is None:
        _err(f"xero-tui: {how}; nothing was saved.")
    else:
        _err(f"xero-tui: {how}. Xero's answer is kept. {pending_sentence(session.pending)}")
    return code


def _sign_in(session: ConnectSession, args: argparse.Namespace) -> None:
    """Storage first (a sign-in it cannot keep is wasted), then the secret, then Xero."""
    from dataclasses import replace

    probe = _run(session.probe_storage())
    if not probe.ok:
        from xero_tui.core.errors import StorageError

        raise StorageError(probe.message)
    draft = session.draft
    stored = None
    if draft.kind.has_secret and session.renewing and not os.environ.get("XERO_CLIENT_SECRET"):
        stored = session.ctx.client_secret_for(draft.client_id)
    session.draft = replace(draft, client_secret=_read_secret(draft.kind, stored))
    if draft.kind is Kind.CUSTOM:
        _run(session.client_credentials())
    else:
        _run(_consent(session, args))


class _StdinLines:
    """Lines typed or pasted on stdin, read on the event loop as they arrive.

    No thread waits on stdin, so nothing is left blocked when the sign-in ends another way: a
    terminal that sends nothing, or a pipe held open, cannot keep the command from exiting.
    """

    def __init__(self) -> None:
        import asyncio

        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._fd = sys.stdin.fileno()
        self._partial = b""
        self._watching = False
        try:
            self._loop.add_reader(self._fd, self._readable)
            self._watching = True
        except (OSError, ValueError):
            # A regular file or /dev/null cannot be watched, and reading it never blocks.
            while self._read():
                pass

    def _read(self) -> bool:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self.close()
            if self._partial:
                self.lines.put_nowait(self._partial.decode("utf-8", "replace"))
                self._partial = b""
            self.lines.put_nowait(None)
            return False
        *complete, self._partial = (self._partial + data).split(b"\n")
        for line in complete:
            self.lines.put_nowait(line.decode("utf-8", "replace"))
        return True

    def _readable(self) -> None:
        self._read()

    async def next(self) -> str | None:
        return await self.lines.get()

    def close(self) -> None:
        if self._watching:
            self._watching = False
            self._loop.remove_reader(self._fd)


async def _consent(session: ConnectSession, args: argparse.Namespace) -> None:
    attempt = await session.begin_consent(timeout=args.timeout, allow_launch=not args.no_browser)
    try:
        _show_attempt(attempt)
        result = await _first_of_callback_or_paste(attempt)
        _err("Signed in; exchanging the code...")
        await session.complete_consent(attempt, result)
    finally:
        await attempt.close()


def _duration(seconds: float) -> str:
    whole = max(1, round(seconds))
    if whole < 90:
        return f"{whole} second{'s' if whole != 1 else ''}"
    minutes = round(whole / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _show_attempt(attempt: ConsentAttempt) -> None:
    from xero_tui.core.validate import redirect_uri_note

    note = redirect_uri_note(attempt.request.redirect_uri)
    if note:
        _err(f"Note: {note}")
    _err("Open this URL in a browser to sign in to Xero and choose organisations:")
    _err("")
    _err(f"  {attempt.url}")
    _err("")
    _err(attempt.browser_note)
    if attempt.ssh_command:
        _err("On your own computer, run this first so the browser's redirect reaches this machine:")
        _err(f"\n  {attempt.ssh_command}\n")
        _err(attempt.tunnel_note or "")
    _err(
        f"Waiting up to {_duration(attempt.remaining())} on port {attempt.port}. Or paste "
        "the URL the browser ended on (it starts with "
        f"{attempt.request.redirect_uri}) and press Enter:"
    )


async def _first_of_callback_or_paste(attempt: ConsentAttempt) -> CallbackResult:
    import asyncio

    waiter = asyncio.ensure_future(attempt.wait())
    stdin = _StdinLines() if sys.stdin is not None and not sys.stdin.closed else None
    reader: asyncio.Future[str | None] | None = None
    try:
        while True:
            pending: set[asyncio.Future[Any]] = {waiter}
            if stdin is not None:
                if reader is None:
                    reader = asyncio.ensure_future(stdin.next())
                pending.add(reader)
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                return waiter.result()
            assert reader is not None
            line = reader.result()
            reader = None
            if line is None:
                stdin = None
                continue
            if not line.strip():
                continue
            try:
                attempt.submit_pasted_url(line.strip())
            except CallbackError as exc:
                _err(f"xero-tui: {exc} Paste it again, or finish in the browser.")
    finally:
        if reader is not None:
            reader.cancel()
        if stdin is not None:
            stdin.close()
        if not waiter.done():
            attempt.cancel()
            waiter.cancel()


def _choose(args: argparse.Namespace, session: ConnectSession) -> list[Tenant]:
    preselected = session.preselect(args.tenant)
    for wanted in preselected.unknown:
        _err(f"xero-tui: no organisation {wanted!r} among those this app reaches.")
    if not preselected.needs_choice:
        chosen = list(preselected.tenants)
    else:
        assert session.outcome is not None
        chosen = _ask_tenants(session.outcome.ordered())
    from xero_tui.core.models import tier_notice

    # The app's organisations saved already count towards its tier too.
    client_id = session.draft.client_id
    saved = {c.tenant_id for c in session.ctx.connections() if c.client_id == client_id}
    notice = tier_notice(len(saved | {t.tenant_id for t in chosen}))
    if notice:
        _err(f"xero-tui: {notice}")
    # Who consented, and to what, before it is saved: a consent slipped in by someone else
    # shows here.
    user = session.outcome.user if session.outcome is not None else None
    names = ", ".join(clean_text(t.tenant_name, 80) for t in chosen)
    _err(f"Signed in to Xero as {user}; saving {names}." if user else f"Saving {names}.")
    return chosen


def _ask_tenants(tenants: list[Tenant]) -> list[Tenant]:
    """Ask at the terminal which organisations to save, so a finished consent is not wasted."""
    from xero_tui.core.connect import parse_choice

    names = ", ".join(clean_text(t.tenant_name, 80) for t in tenants)
    if not sys.stdin.isatty():
        raise UsageError(f"Say which organisation to save with --tenant (one of: {names}).")
    for number, tenant in enumerate(tenants, 1):
        name, kind = clean_text(tenant.tenant_name, 80), clean_text(tenant.tenant_type, 40)
        _err(f"  {number}. {name} ({kind})")
    while True:
        try:
            answer = input("Organisations to save (numbers, comma separated): ")
        except EOFError:
            raise UsageError("No organisation was chosen.") from None
        try:
            return [tenants[index] for index in parse_choice(answer, len(tenants))]
        except UsageError as exc:
            _err(str(exc))
