"""Placement: which sites and pools may run a job, and in which order of preference.

Pure functions of (job, site snapshots, GPU catalog). Hard filters drop a
site or pool and say why in words a user understands; the survivors are
ranked by estimated completion time, cost and carbon, weighted by the job's
objective. The scheduler, ``grappe plan`` and the simulator all call
``place()``.
"""

from grappe.placement.place import (
    OBJECTIVE_WEIGHTS,
    Candidate,
    Placement,
    Rejection,
    place,
)

__all__ = ["OBJECTIVE_WEIGHTS", "Candidate", "Placement", "Rejection", "place"]
