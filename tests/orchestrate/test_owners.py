"""Lease owner ids: a process of this host that no longer runs is known dead."""

from __future__ import annotations

import socket
import subprocess

from revbridge.orchestrate.owners import is_dead, owner_of, this_process


def test_a_running_process_is_alive_and_a_killed_one_dead() -> None:
    process = subprocess.Popen(["sleep", "60"])
    owner = owner_of(process.pid)
    try:
        assert not is_dead(owner) and not is_dead(f"{owner}/2")
        process.kill()
        process.wait()
        assert is_dead(owner) and is_dead(f"{owner}/2")
    finally:
        process.kill()
        process.wait()


def test_a_reused_pid_is_another_owner() -> None:
    host, pid, start = this_process().split(":")
    assert not is_dead(this_process())
    assert is_dead(f"{host}:{pid}:{int(start) + 1}")
    assert not is_dead(f"{host}:{pid}")  # no start time: alive while the pid runs


def test_owners_elsewhere_or_of_another_form_are_never_judged_dead() -> None:
    assert not is_dead(f"not-{socket.gethostname()}:999999999:1")
    assert not is_dead("A")
    assert not is_dead(f"{socket.gethostname()}:racer")
