"""Dataset files through fsspec: a local directory by default, any filesystem fsspec reaches.

Files live at ``<root>/<sector>/<name>/<version>/<file>``. A file is written
under a temporary name, its size and SHA-256 computed on the way, and moved in
place only once complete, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from typing import IO, Any

import fsspec

CHUNK = 1 << 20


class TooLarge(Exception):
    """The file is over the size limit; nothing was kept."""


class DataStorage:
    """Where the catalog's files are kept; ``url`` is an fsspec URL."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.fs.makedirs(self.root, exist_ok=True)

    def path(self, dataset_id: str, version: int, name: str) -> str:
        return f"{self.root}/{dataset_id}/{version}/{name}"

    def file_url(self, dataset_id: str, version: int, name: str) -> str:
        """The fsspec URL of a file, for a backend that copies it to a site."""
        return f"{self.url}/{dataset_id}/{version}/{name}"

    def write(
        self, dataset_id: str, version: int, name: str, chunks: Iterable[bytes], limit: int
    ) -> tuple[int, str]:
        """Store the file from ``chunks``; returns (size, SHA-256). ``TooLarge`` over ``limit``."""
        final = self.path(dataset_id, version, name)
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{final}.{uuid.uuid4().hex}.part"
        digest, size = hashlib.sha256(), 0
        try:
            with self.fs.open(tmp, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"the file is over {limit} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            self.fs.mv(tmp, final)
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
        return size, digest.hexdigest()

    def read(self, dataset_id: str, version: int, name: str) -> Iterator[bytes]:
        """The file's bytes, in chunks."""
        with self.fs.open(self.path(dataset_id, version, name), "rb") as f:
            yield from iter_chunks(f)

    def exists(self, dataset_id: str, version: int, name: str) -> bool:
        return bool(self.fs.exists(self.path(dataset_id, version, name)))


def iter_chunks(f: IO[bytes] | Any) -> Iterator[bytes]:
    """Read an open binary file to its end, one chunk at a time."""
    while chunk := f.read(CHUNK):
        yield chunk
