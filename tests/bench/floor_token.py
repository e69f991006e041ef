"""Floor of `xero-tui token NAME`: read the cached token set from the keyring and print it."""

import json
import sys

import keyring

stored = keyring.get_password("xero-tui", f"grant:{sys.argv[1]}")
assert stored is not None
print(json.loads(stored)["access_token"])
