"""Helpers shared across layers: progress display and regular expressions."""
