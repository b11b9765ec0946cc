"""Issue 26: thread counts and memory budgets come from the machine, with the development machine's
figures where the machine cannot be asked."""

from __future__ import annotations

import os

import pytest

from coreg_plugin.common import machine


def test_cores_and_memory_are_read_from_this_machine():
    assert 1 <= machine.cores() <= (os.cpu_count() or 1)
    memory = machine.available_memory()
    assert memory is not None  # Linux: /proc/meminfo's MemAvailable
    assert memory > 0


@pytest.mark.parametrize(("cores", "memory", "expected"), [
    (2, 24 << 30, 2),      # this machine: one registration per core
    (16, 24 << 30, 4),     # capped
    (16, 1 << 30, 2),      # as many as 1 GiB holds at 400 MiB each
    (16, 100 << 20, 1),    # at least one
    (8, None, 4),          # memory unknown: cores and cap decide
])
def test_tasks_side_by_side_follow_cores_and_memory(monkeypatch, cores, memory, expected):
    monkeypatch.setattr(machine, "cores", lambda: cores)
    monkeypatch.setattr(machine, "available_memory", lambda: memory)
    assert machine.side_by_side(400 << 20, cap=4) == expected


def test_budgets_shrink_with_the_available_memory_and_never_grow(monkeypatch):
    monkeypatch.setattr(machine, "available_memory", lambda: 64 << 30)
    assert machine.budget(160 << 20, 1 / 16) == 160 << 20
    monkeypatch.setattr(machine, "available_memory", lambda: 1 << 30)
    assert machine.budget(160 << 20, 1 / 16) == 64 << 20
    monkeypatch.setattr(machine, "available_memory", lambda: None)
    assert machine.budget(160 << 20, 1 / 16) == 160 << 20
