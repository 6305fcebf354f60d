"""Raw images on object storage (s3://, gs://, ... through fsspec): listing, stat and reading."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from imgpack.errors import InputError
from imgpack.ingest.found import MAX_KEY_BYTES, Found

__all__ = ["walk_url", "read_url"]


def _filesystem(url: str):
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with dvc
        raise InputError(f"{url}: reading URLs needs fsspec") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise InputError(
            f"{url}: no file system for this URL ({exc}); for s3:// install 'imgpack[dask]' "
            "(s3fs), for others the fsspec package that reads them"
        ) from None


def walk_url(url: str) -> Iterator:
    """Every object under the prefix `url`, in ascending key order, as `Found` with its
    stat (size, modification time in ns, a number from its ETag, 0): what the ingest cache keys on.
    Credentials come from the usual environment and config files of that file system."""
    fs, root = _filesystem(url)
    root = root.rstrip("/")
    try:
        listing = fs.find(root, detail=True)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{url}: cannot list the objects ({exc}); check the URL and credentials"
        ) from None
    if not listing:
        raise InputError(f"{url}: no objects under this prefix (check ingest.folder)")
    protocol = url.split("://", 1)[0]
    entries = []
    for path, info in listing.items():
        if info.get("type") == "directory":
            continue
        key = path[len(root) + 1 :] if path.startswith(root + "/") else path
        entries.append((key.encode("utf-8", "surrogateescape"), key, f"{protocol}://{path}", info))
    entries.sort()
    for raw, key, full, info in entries:
        stat = _stat(info)
        if len(raw) > MAX_KEY_BYTES:
            yield Found(key, full, "bad_path", f"key is {len(raw)} bytes, over LMDB's 511", stat)
        else:
            yield Found(key, full, None, "", stat)


def _stat(info: dict[str, Any]) -> tuple[int, int, int, int]:
    modified = info.get("LastModified") or info.get("mtime") or info.get("updated") or 0
    if hasattr(modified, "timestamp"):
        modified = modified.timestamp()
    try:
        mtime_ns = int(float(modified) * 1e9)
    except (TypeError, ValueError):
        mtime_ns = 0
    tag = str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or "")
    tag_number = int.from_bytes(hashlib.sha256(tag.encode()).digest()[:7], "big")
    return int(info.get("size") or 0), mtime_ns, tag_number, 0


def read_url(url: str) -> bytes:
    fs, path = _filesystem(url)
    return fs.cat_file(path)
