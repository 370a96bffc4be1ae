"""Fixtures for tests against a real Tryton 8.2 server (SQLite, subprocess).

A *template* database is built once per session (create, activate ``account`` +
``revbridge_erp``, run ``setup_erp``); each test gets its own copy of the SQLite file in
its own work directory and its own ``trytond`` process on a free port, stopped by pid.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from revbridge.post.tryton_rpc import TrytonRPC
from revbridge.post.tryton_server import TrytonServer, copy_sqlite_database, is_available
from revbridge.post.tryton_setup import AccountSpec, EntitySpec, SetupReport, setup_erp

ADMIN = "admin"
ADMIN_PASSWORD = "revbridge-test-admin"
FISCAL_YEAR = 2025
ENTITIES = (
    EntitySpec("HOSP1", "General Hospital"),
    EntitySpec("CLIN2", "Outpatient Clinic Group"),
)
ACCOUNTS = (
    AccountSpec("1000", "Cash – operating", "asset"),
    AccountSpec("1005", "Cash clearing – remittances", "asset"),
    AccountSpec("1115", "Patient AR – Commercial", "asset"),
    AccountSpec("1117", "Patient AR – Self-pay", "asset"),
    AccountSpec("2110", "Refunds payable – payers", "liability"),
    AccountSpec("5140", "Contractual adjustments – Commercial", "expense"),
    AccountSpec("6810", "Interest income – payer", "revenue"),
)

TIMINGS: dict[str, float] = {}
STARTS: list[float] = []


@dataclass(frozen=True)
class TrytonTemplate:
    db_file: Path
    report: SetupReport


@dataclass
class TrytonEnv:
    server: TrytonServer
    rpc: TrytonRPC
    database: str
    report: SetupReport
    entities: tuple[EntitySpec, ...] = ENTITIES
    accounts: tuple[AccountSpec, ...] = ACCOUNTS
    fiscal_year: int = FISCAL_YEAR
    extra_rpcs: list[TrytonRPC] = field(default_factory=list)

    def new_rpc(self) -> TrytonRPC:
        rpc = TrytonRPC(self.server.base_url, self.database, ADMIN, ADMIN_PASSWORD)
        self.extra_rpcs.append(rpc)
        return rpc


@pytest.fixture(scope="session")
def tryton_template(tmp_path_factory: pytest.TempPathFactory) -> TrytonTemplate:
    if not is_available():
        pytest.skip(
            "trytond with the revbridge_erp module is not installed (pip install -e erp/tryton)"
        )
    server = TrytonServer(tmp_path_factory.mktemp("tryton-template"))
    started = time.monotonic()
    server.create_database("template", ADMIN_PASSWORD)
    TIMINGS["template: trytond-admin (create + activate)"] = time.monotonic() - started
    mark = time.monotonic()
    server.start(["template"])
    TIMINGS["template: server start"] = time.monotonic() - mark
    try:
        rpc = TrytonRPC(server.base_url, "template", ADMIN, ADMIN_PASSWORD)
        mark = time.monotonic()
        report = setup_erp(rpc, entities=ENTITIES, accounts=ACCOUNTS, fiscal_year=FISCAL_YEAR)
        TIMINGS["template: setup_erp"] = time.monotonic() - mark
        rpc.close()
    finally:
        server.stop()
    TIMINGS["template: total"] = time.monotonic() - started
    return TrytonTemplate(server.database_path("template"), report)


@pytest.fixture
def tryton(tryton_template: TrytonTemplate, tmp_path: Path) -> Iterator[TrytonEnv]:
    """A fresh copy of the template database served by its own trytond process."""
    started = time.monotonic()
    server = TrytonServer(tmp_path / "tryton")
    copy_sqlite_database(tryton_template.db_file, server.database_path("test"))
    server.start(["test"])
    STARTS.append(time.monotonic() - started)
    rpc = TrytonRPC(server.base_url, "test", ADMIN, ADMIN_PASSWORD)
    env = TrytonEnv(server, rpc, "test", tryton_template.report)
    try:
        yield env
    finally:
        for other in [rpc, *env.extra_rpcs]:
            other.close()
        server.stop()
        assert not server.running


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("tryton timings")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.2f}s")
    if STARTS:
        terminalreporter.write_line(
            f"per-test copy + server start: {len(STARTS)} x, "
            f"mean {sum(STARTS) / len(STARTS):.2f}s, max {max(STARTS):.2f}s"
        )
