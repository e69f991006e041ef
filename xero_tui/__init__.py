"""xero-tui: create and keep Xero OAuth 2.0 connections from a terminal."""

__version__ = "0.1.0"
