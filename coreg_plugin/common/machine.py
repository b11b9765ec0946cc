"""What the machine offers a run: its cores and the memory still available.

Thread counts and memory budgets are derived from these when a module is loaded, so the same code
sizes itself on a laptop and on a large server; where the machine cannot be asked (no
``sched_getaffinity``, no ``/proc/meminfo`` or ``sysconf``), the figures measured on the 2-core
development machine are used as they are.
"""

from __future__ import annotations

import os


def cores() -> int:
    """The cores this process may run on (its CPU affinity where known, else all of them), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_memory() -> int | None:
    """Bytes of memory available to new work (``MemAvailable`` on Linux, free pages elsewhere), or
    None when the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


#: Files a process may open where the system does not say (Windows' C runtime, which GDAL uses).
DEFAULT_OPEN_FILES = 512
#: An open-file limit above this (or none) counts as this many.
MAX_OPEN_FILES = 1 << 20


def open_files() -> int:
    """The files this process may open at once: its soft limit, :data:`DEFAULT_OPEN_FILES` where
    the system does not say, at most :data:`MAX_OPEN_FILES` (also for "unlimited")."""
    try:
        import resource
    except ImportError:  # Windows
        return DEFAULT_OPEN_FILES
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return MAX_OPEN_FILES if soft == resource.RLIM_INFINITY or soft > MAX_OPEN_FILES else soft


def threads(cap: int) -> int:
    """Threads for work that scales with cores: one per core, at most ``cap``."""
    return min(cap, cores())


def side_by_side(task_bytes: int, cap: int) -> int:
    """How many tasks of about ``task_bytes`` each to run at once: one per core, at most ``cap``, and
    no more than the available memory holds (at least 1)."""
    memory = available_memory()
    fitting = cap if memory is None else memory // max(task_bytes, 1)
    return max(1, min(cap, cores(), fitting))


def budget(default: int, share: float) -> int:
    """A memory budget (bytes): ``default``, or ``share`` of the available memory if that is less."""
    memory = available_memory()
    return default if memory is None else max(0, min(default, int(memory * share)))
