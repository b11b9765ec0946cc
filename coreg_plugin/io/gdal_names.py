"""GDAL dataset names: plain paths, virtual file systems and driver-prefixed subdatasets.

GDAL opens more than files: ``/vsizip/archive.zip/inner.tif``, ``/vsicurl/https://...``,
``GPKG:file.gpkg:table``, ``NETCDF:"file.nc":variable``. Coreg reads exactly the name it is given;
these helpers tell what file (if any) holds such a dataset, for messages, for output names and to
refuse an output that would overwrite an input.
"""

from __future__ import annotations

import os
import re

#: ``DRIVER:rest`` with a driver name of two characters or more (``C:`` is a Windows drive).
_DRIVER_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_]+):(.+)$")
#: Virtual file systems backed by a local file (the archive or compressed file).
_LOCAL_VSI = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")


def is_plain_path(name: str) -> bool:
    """Whether ``name`` is an ordinary file-system path (no ``/vsi...`` prefix, no ``DRIVER:``)."""
    return not name.startswith("/vsi") and _DRIVER_PREFIX.match(name) is None


def _existing_prefix(path: str) -> str | None:
    """The longest leading part of ``path`` that is an existing file (the archive in a /vsizip/ name)."""
    candidate = path
    while candidate and candidate not in (os.sep, "/"):
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(candidate)
        if parent == candidate:
            break
        candidate = parent
    return None


def underlying_file(name: str) -> str | None:
    """The local file that holds dataset ``name``, or None (remote, in memory, unknown).

    A plain path is its own file, whether it exists or not.
    """
    if is_plain_path(name):
        return name
    for prefix in _LOCAL_VSI:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            return _existing_prefix(rest if rest.startswith("/") or os.path.isabs(rest) else "/" + rest)
    match = _DRIVER_PREFIX.match(name)
    if match is None:
        return None
    rest = match.group(2)
    if rest.startswith('"'):
        quoted = rest[1:].split('"', 1)[0]
        return underlying_file(quoted)
    if os.path.exists(rest):
        return underlying_file(rest)
    head = rest.rsplit(":", 1)[0]
    return underlying_file(head) if head != rest else None


def dataset_stem(name: str) -> str:
    """A file-name stem for outputs derived from ``name``: ``tile`` for ``/vsizip/a.zip/tile.tif``,
    ``file_table`` for ``GPKG:file.gpkg:table``; only letters, digits, ``._-`` kept."""
    match = _DRIVER_PREFIX.match(name)
    if match is not None and not name.startswith("/vsi"):
        rest = match.group(2)
        holder = underlying_file(name)
        subdataset = rest.rsplit(":", 1)[1] if holder is not None and ":" in rest else ""
        stem = os.path.splitext(os.path.basename(holder or rest))[0] + (f"_{subdataset}" if subdataset else "")
    else:
        stem = os.path.splitext(os.path.basename(name.rstrip("/")))[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_") or "input"
