"""Floor of `xero-tui token NAME --force-refresh`: refresh with httpx, store it, print it."""

import json
import os
import sys
import time

import httpx
import keyring

grant_key, client_id = f"grant:{sys.argv[1]}", sys.argv[2]
stored_text = keyring.get_password("xero-tui", grant_key)
secret = keyring.get_password("xero-tui", f"client-secret:{client_id}")
assert stored_text is not None and secret is not None
stored = json.loads(stored_text)
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
keyring.set_password("xero-tui", grant_key, json.dumps(stored))
print(body["access_token"])
