"""Floor of `xero-tui list --json`: load the same TOML with tomllib and print it as JSON."""

import json
import os
import sys
import tomllib

with open(os.path.join(os.environ["XERO_TUI_CONFIG_DIR"], "config.toml"), "rb") as file:
    config = tomllib.load(file)
json.dump(config.get("connections", {}), sys.stdout, indent=2, default=str)
sys.stdout.write("\n")
