"""The outputs of a run: checked against the inputs and each other before any work, written aside,
published all together or not at all.

:func:`check_outputs` refuses, before any work, an output that is a folder, lies in a folder that
does not exist or cannot be written, names the same file as an input (by real path: links, ``..``
and case-insensitive file systems included, whether the files exist or not) or as another output.

A :class:`Staging` gives each output a private hidden folder beside its target (same file system,
so publishing is a rename) in which the run writes the file under its final name. Files are created
by GDAL or ``open()``, so their mode follows the umask like any other file the user creates.
:meth:`Staging.publish` moves every staged file into place at the end, after moving any existing
target (and its sidecars, which would describe the old file) aside; if one move fails, the earlier
ones are undone and the old files are put back. Whatever happens, the staging folders are removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import OutputError
from .gdal_names import underlying_file

#: Files GDAL keeps beside a raster; an old one would describe the new file wrongly.
SIDECARS = (".aux.xml", ".ovr", ".msk")


def _key(path: str) -> str:
    """What identifies a file: its real absolute path, case-folded where the file system does."""
    return os.path.normcase(os.path.realpath(os.path.abspath(path)))


def _identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) of an existing file (hard links share it), else None."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


def check_outputs(outputs: Sequence[tuple[str, str]], inputs: Sequence[tuple[str, str]]) -> None:
    """Raise ``OutputError`` now if an output cannot or must not be written.

    ``outputs`` and ``inputs`` are (role, path) pairs; inputs may be GDAL dataset names
    (``/vsizip/...``, ``GPKG:file:table``), compared through the file that holds them. Each path is
    resolved once: 300 outputs against 301 inputs take milliseconds, not the 20 s of comparing
    every pair.
    """
    by_key: dict[str, int] = {}
    by_identity: dict[tuple[int, int], int] = {}
    for index, (_, name) in enumerate(inputs):
        held_in = underlying_file(name)
        if held_in is not None:
            by_key.setdefault(_key(held_in), index)
            identity = _identity(held_in)
            if identity is not None:
                by_identity.setdefault(identity, index)
    for role, path in outputs:
        if os.path.isdir(path):
            raise OutputError(f"{role} '{path}' is a folder, not a file name")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise OutputError(f"{role} '{path}': folder '{folder}' does not exist")
        identity = _identity(path)
        same = [i for i in (by_key.get(_key(path)), by_identity.get(identity) if identity else None) if i is not None]
        if same:
            input_role, name = inputs[min(same)]
            raise OutputError(f"{role} '{path}' would overwrite the {input_role} '{name}'")
    seen: dict[str, tuple[str, str]] = {}
    for role, path in outputs:
        key = _key(path)
        if key in seen:
            other_role, other = seen[key]
            raise OutputError(f"more than one output would be written at '{path}' ({other_role} and {role})")
        seen[key] = (role, path)


@dataclass
class _Staged:
    target: str
    folder: str

    @property
    def path(self) -> str:
        return os.path.join(self.folder, os.path.basename(self.target))


class Staging:
    """Private folders beside the targets where a run writes its outputs (see the module docstring).

    Use as a context manager: leaving it removes the staging folders; call :meth:`publish` inside
    to move the outputs into place.
    """

    def __init__(self, targets: Iterable[tuple[str, str]]) -> None:
        """Create a staging folder beside each (role, target path); raise ``OutputError`` naming the
        target when its folder cannot be written (read-only, no permission, full)."""
        self._staged: dict[str, _Staged] = {}
        try:
            for role, target in targets:
                folder = os.path.dirname(os.path.abspath(target))
                try:
                    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".coreg-partial",
                                               dir=folder)
                except OSError as exc:
                    raise OutputError(f"{role} '{target}': cannot write in folder '{folder}' "
                                      f"({exc.strerror or exc})") from None
                self._staged[target] = _Staged(target, staging)
        except BaseException:
            self.discard()
            raise

    def path(self, target: str) -> str:
        """Where to write ``target`` for now (same file name, in its staging folder)."""
        return self._staged[target].path

    def folder(self, target: str) -> str:
        """The staging folder of ``target`` (for intermediate files of the same output)."""
        return self._staged[target].folder

    def drop(self, target: str) -> None:
        """Give up ``target``: it will not be published (its staging folder is removed now)."""
        staged = self._staged.pop(target)
        shutil.rmtree(staged.folder, ignore_errors=True)

    def publish(self) -> None:
        """Move every staged file into place, all or none; then remove the staging folders."""
        moves: list[tuple[str, str]] = []
        for staged in self._staged.values():
            target_folder = os.path.dirname(os.path.abspath(staged.target))
            names = sorted(name for name in os.listdir(staged.folder) if not name.startswith(".coreg-"))
            if os.path.basename(staged.target) not in names:
                raise OutputError(f"output '{staged.target}' was not produced")
            moves += [(os.path.join(staged.folder, name), os.path.join(target_folder, name)) for name in names]
        backups: list[tuple[str, str]] = []
        placed: list[str] = []
        try:
            for staged in self._staged.values():
                for old in [staged.target] + [staged.target + s for s in SIDECARS]:
                    if os.path.lexists(old):
                        backup = os.path.join(staged.folder, ".coreg-old-" + os.path.basename(old))
                        os.replace(old, backup)
                        backups.append((backup, old))
            for source, destination in moves:
                os.replace(source, destination)
                placed.append(destination)
        except OSError as exc:
            for destination in placed:
                os.remove(destination)
            for backup, old in backups:
                os.replace(backup, old)
            raise OutputError(f"could not move the outputs into place ({exc}); nothing was changed") from None
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the staging folders and whatever is in them (the targets are untouched)."""
        for staged in self._staged.values():
            shutil.rmtree(staged.folder, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()


def free_bytes(path: str) -> int:
    """Free space (bytes) for an unprivileged user in the file system holding ``path``'s folder."""
    return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
