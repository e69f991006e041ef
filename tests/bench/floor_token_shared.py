"""Floor of `xero-tui token NAME` on a shared store: connect to PostgreSQL, select the grant's
row, decrypt it and print the access token."""

import json
import os
import sys

import psycopg
from cryptography.fernet import Fernet

with psycopg.connect(os.environ["XERO_TUI_STORE"]) as conn:
    row = conn.execute(
        "SELECT value FROM xero_tui.secrets WHERE key = %s", (f"grant:{sys.argv[1]}",)
    ).fetchone()
assert row is not None
print(json.loads(Fernet(os.environ["XERO_TUI_STORE_KEY"]).decrypt(row[0]))["access_token"])
