"""Floor of `xero-tui token NAME --force-refresh` on a shared store: lock the grant's row, read
and decrypt its tokens and the client secret, refresh with httpx, write the rotated tokens
encrypted, commit, print."""

import json
import os
import sys
import time

import httpx
import psycopg
from cryptography.fernet import Fernet

grant_id, client_id = sys.argv[1], sys.argv[2]
fernet = Fernet(os.environ["XERO_TUI_STORE_KEY"])
with psycopg.connect(os.environ["XERO_TUI_STORE"]) as conn:
    conn.execute(
        "SELECT grant_id FROM xero_tui.grant_locks WHERE grant_id = %s FOR UPDATE", (grant_id,)
    )
    rows = dict(
        conn.execute(
            "SELECT key, value FROM xero_tui.secrets WHERE key = ANY(%s)",
            ([f"grant:{grant_id}", f"client-secret:{client_id}"],),
        ).fetchall()
    )
    stored = json.loads(fernet.decrypt(rows[f"grant:{grant_id}"]))
    secret = fernet.decrypt(rows[f"client-secret:{client_id}"]).decode()
    answer = httpx.post(
        os.environ["XERO_TUI_IDENTITY_URL"] + "/connect/token",
        data={"grant_type": "refresh_token", "refresh_token": stored["refresh_token"]},
        auth=(client_id, secret),
    )
    answer.raise_for_status()
    body = answer.json()
    stored.update(
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
        expires_at=time.time() + body["expires_in"],
    )
    conn.execute(
        "UPDATE xero_tui.secrets SET value = %s WHERE key = %s",
        (fernet.encrypt(json.dumps(stored).encode()).decode(), f"grant:{grant_id}"),
    )
print(body["access_token"])
