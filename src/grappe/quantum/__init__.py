"""Quantum as a service: programs, devices, the emulators that run them, tasks and sessions.

A quantum task is a job: it waits in the same queue, is placed by the same
filters (modality, qubits, shots, jurisdiction) and is charged to the same
project. This package holds what is specific to it; the SDKs (Qiskit, Pulser,
Perceval) are imported only where a program is read or run.
"""
