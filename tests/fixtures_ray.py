"""Pytest fixtures for a real ray (filled in by its module)."""
