"""Pytest fixtures for a real slurm (filled in by its module)."""
