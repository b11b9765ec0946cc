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

A run killed outright (SIGKILL, a crash, a power cut) cannot remove its staging folders, so each
holds a small record of its owner (:data:`OWNER_FILE`: process id, host name and the process's
start time). The next run staging into the same folder removes those whose owner is gone: on this
host, no such process, or a zombie, or a process of that id started at another time (the id was
reused). A folder of another host, of a live process or without a readable record is never
touched. An old output a killed run had moved aside while publishing is put back where nothing
took its place. :func:`make_owned_folder` and :func:`sweep_stale` do the same for any scratch
folder. Where a process's state cannot be known (Windows), owners are taken to be alive.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..common.errors import OutputError
from .gdal_names import underlying_file

log = logging.getLogger("coreg")

#: Files GDAL keeps beside a raster; an old one would describe the new file wrongly.
SIDECARS = (".aux.xml", ".ovr", ".msk")
#: Staging folders are named ``.<target name>.<random>`` followed by this.
STAGING_SUFFIX = ".coreg-partial"
#: The record of the process writing into a staging or scratch folder (JSON: pid, host, started).
OWNER_FILE = ".coreg-owner"
#: What an old target moved aside while publishing is called in its staging folder (+ its name).
BACKUP_PREFIX = ".coreg-old-"


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


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (the first is the state, the 20th
    the start time), or None without ``/proc`` (macOS) or once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started, comparable between calls: on Linux the boot's id and the start
    in clock ticks since boot; None elsewhere (macOS has no ``/proc``: a folder whose owner's id is
    running again is then kept, never swept by mistake)."""
    if not sys.platform.startswith("linux"):
        return None
    fields = _proc_stat(pid)
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        return None
    return None if fields is None else f"{boot}:{fields[19]}"  # field 22 of the file, starttime


def _running(pid: int) -> bool | None:
    """Whether process ``pid`` runs on this host (a zombie does not); None when it cannot be known."""
    if os.name != "posix":
        return None  # Windows' os.kill would end the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    except OSError:
        return None
    fields = _proc_stat(pid)
    return fields is None or fields[0] != "Z"  # no /proc (macOS), or it ended just now: the next run knows


@functools.lru_cache(maxsize=4)
def _owner_record(pid: int) -> str:
    """The owner record of this process (``pid`` keys the cache: a forked child is another owner)."""
    return json.dumps({"pid": pid, "host": socket.gethostname(), "started": _process_start(pid)})


def owner_gone(folder: str) -> bool:
    """Whether the process recorded in ``folder`` (see :func:`make_owned_folder`) is gone from this
    host: not running, or a process of the same id that started at another time. False when the
    record is missing or unreadable, names another host, or the process's state cannot be known."""
    try:
        with open(os.path.join(folder, OWNER_FILE)) as f:
            record = json.load(f)
        pid, host, started = int(record["pid"]), record["host"], record.get("started")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname() or pid <= 0:
        return False
    running = _running(pid)
    if running is None:
        return False
    if not running:
        return True
    now = _process_start(pid)
    return started is not None and now is not None and now != started


def make_owned_folder(parent: str, prefix: str, suffix: str = "") -> str:
    """Create a private folder in ``parent`` (``tempfile.mkdtemp``) holding this process's owner
    record, so that :func:`sweep_stale` can remove it once this process is gone. The record is
    written if it can be (a full disk leaves the folder unrecorded, never swept); its name starts
    with ``.coreg-`` so that :meth:`Staging.publish` leaves it behind."""
    folder = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent)
    try:
        with open(os.path.join(folder, OWNER_FILE), "w") as f:
            f.write(_owner_record(os.getpid()))
    except OSError:
        pass  # the run itself will say what is wrong with the disk
    return folder


def sweep_stale(parent: str, prefix: str, suffix: str = "") -> list[str]:
    """Remove the folders in ``parent`` named ``prefix``...``suffix`` whose owner is gone
    (:func:`owner_gone`), first putting back into ``parent`` any old target moved aside in them
    where nothing took its place. Returns the folders removed; never raises."""
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    removed = []
    for name in names:
        folder = os.path.join(parent, name)
        if not (name.startswith(prefix) and name.endswith(suffix)) or os.path.islink(folder) \
                or not os.path.isdir(folder) or not owner_gone(folder):
            continue
        try:
            backups = [n for n in os.listdir(folder) if n.startswith(BACKUP_PREFIX)]
        except OSError:
            backups = []
        for backup in backups:
            old = os.path.join(parent, backup[len(BACKUP_PREFIX):])
            if not os.path.lexists(old):
                try:
                    os.replace(os.path.join(folder, backup), old)
                    log.warning("put back '%s', moved aside by a run that was killed while publishing", old)
                except OSError:
                    pass  # another run put it back first
        shutil.rmtree(folder, ignore_errors=True)
        log.info("removed '%s', left by a run that ended without cleaning up", folder)
        removed.append(folder)
    return removed


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
        """Create a staging folder beside each (role, target path), after removing the stale ones
        of runs that are gone from each folder (:func:`sweep_stale`); raise ``OutputError`` naming the
        target when its folder cannot be written (read-only, no permission, full)."""
        self._staged: dict[str, _Staged] = {}
        swept: set[str] = set()
        try:
            for role, target in targets:
                folder = os.path.dirname(os.path.abspath(target))
                if folder not in swept:
                    sweep_stale(folder, ".", STAGING_SUFFIX)
                    swept.add(folder)
                try:
                    staging = make_owned_folder(folder, f".{os.path.basename(target)}.", STAGING_SUFFIX)
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
                        backup = os.path.join(staged.folder, BACKUP_PREFIX + os.path.basename(old))
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
