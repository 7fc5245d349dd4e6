"""Trace replay: the production scheduler and placement code on a virtual clock.

This package so far reads job traces (``trace``); the replay driver, the
simulated backend and the metrics come next.
"""
