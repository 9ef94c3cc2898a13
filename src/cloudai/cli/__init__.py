"""Command-line entry points (`cloudai ...`)."""
