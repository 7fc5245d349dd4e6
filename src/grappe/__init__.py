"""Grappe: an open-source AI factory."""

__version__ = "0.1.0"
