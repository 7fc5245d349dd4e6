"""Datasets: the catalog, who may read what, and how data reaches a job.

``catalog`` holds the use cases of the catalog (list, show, add, upload,
download), ``access`` the governance (requests, grants, refusals, revocations),
``inputs`` what jobs need from both, ``storage`` the files (through fsspec),
``staging`` the copy into a job's directory with checksums verified, and
``seed`` the small open datasets a fresh factory starts with.
"""
