"""Which shard owns an image and where a shard writes: the rule the batch runner and the merge share.

Every Processing instance runs the same command over the whole manifest and keeps the lines whose image
key hashes to its index (:func:`shard_of`); it writes under :func:`shard_dir`, where the merge reads.
"""

from __future__ import annotations

import hashlib

from alp import storage


def shard_of(key: str, shard_count: int) -> int:
    """The shard that owns ``key``: a stable hash (the same on every instance, run and Python version)."""
    if shard_count < 1:
        raise ValueError("shard_count must be >= 1")
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % shard_count


def shard_dir(out_uri: str, shard_index: int, shard_count: int) -> str:
    return storage.join(out_uri, f"shard-{shard_index:05d}-of-{shard_count:05d}")
