"""The parts of xero-tui that do the work: no Textual import anywhere below this package."""
