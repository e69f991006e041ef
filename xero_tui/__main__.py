import sys

from xero_tui.cli import main

sys.exit(main())
