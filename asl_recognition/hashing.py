"""One file hasher for the store, the registry, the hand models and the Triton repository.

Standard library only: the server image's entrypoint and health check import it (through
:mod:`asl_recognition.serving.repo_manifest`) with Triton's Python 3.10.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def copy_hashed(source: str | Path, dest: str | Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """Copy ``source`` to ``dest`` in one read, returning the copy's sha256 and size.

    Hashing a file and then copying it reads it twice: a writer between the two reads
    leaves a copy whose bytes are not the ones hashed. One read hashes exactly what is kept.
    """
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as src, open(dest, "wb") as out:
        while block := src.read(chunk):
            digest.update(block)
            out.write(block)
            size += len(block)
    return digest.hexdigest(), size
