"""Pytest fixtures for a real ssh (filled in by its module)."""
