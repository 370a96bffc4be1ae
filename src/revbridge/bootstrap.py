"""The composition root: the only module that names concrete classes.

It turns a validated ``Config`` into a running application: the store (migrated, its
durability checked), master data and posting rules, the outputs, and the job handlers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from revbridge.config import LEDGER_SPEC, WORKER_SPEC, Config, find_config, load_config
from revbridge.errors import ConfigurationError
from revbridge.ingest import x12_files
from revbridge.ledger.master_data import load_master_data
from revbridge.ledger.posting_rules import load_posting_rules
from revbridge.normalise import x12_835
from revbridge.orchestrate.clock import Clock, SystemClock
from revbridge.orchestrate.handlers import Services, handlers
from revbridge.orchestrate.worker import Worker
from revbridge.post import erp_tryton, gl_file
from revbridge.post.base import JournalSink
from revbridge.post.tryton_rpc import TrytonRPC
from revbridge.post.tryton_setup import AccountSpec, EntitySpec, SetupReport, setup_erp
from revbridge.registry import ComponentSpec
from revbridge.store import sqlite
from revbridge.store.base import Store

COMPONENT_SPECS: tuple[ComponentSpec, ...] = (
    sqlite.SPEC,
    x12_files.SPEC,
    x12_835.SPEC,
    erp_tryton.SPEC,
    gl_file.SPEC,
)
SPECS = {(s.section, s.type): s for s in COMPONENT_SPECS}
ALL_SPECS = (*COMPONENT_SPECS, LEDGER_SPEC, WORKER_SPEC)


def read_config(explicit: str | None) -> Config:
    return load_config(find_config(explicit), SPECS)


def open_store(config: Config) -> Store:
    if config.store.type != "sqlite":
        raise ConfigurationError(f"store type {config.store.type!r} is not available")
    store = sqlite.SQLiteStore(Path(config.store.options["path"]))
    store.migrate()
    store.check_durability()
    return store


def make_sink(config: Config, name: str) -> JournalSink:
    output = config.output(name)
    options = output.options
    if output.type == "gl_file":
        return gl_file.GLFileSink(Path(options["path"]))
    if output.type == "erp_tryton":
        rpc = TrytonRPC(
            options["url"],
            options["database"],
            options["user"],
            options["password"].reveal(),
            timeout=options["timeout_seconds"],
        )
        return erp_tryton.TrytonSink(
            rpc, journal_code=options["journal"], batch_size=options["batch_size"]
        )
    raise ConfigurationError(f"output type {output.type!r} cannot book journals")


@dataclass
class App:
    config: Config
    store: Store
    services: Services
    clock: Clock
    _sinks: dict[str, JournalSink] = field(default_factory=dict)

    def worker(self) -> Worker:
        return Worker(
            self.store,
            handlers(self.services),
            self.clock,
            lease_seconds=self.config.worker["lease_seconds"],
            max_attempts=self.config.worker["max_attempts"],
        )

    def close(self) -> None:
        for sink in self._sinks.values():
            sink.close()
        self.store.close()


def build(
    config: Config,
    clock: Clock | None = None,
    sink_factory: Callable[[str], JournalSink] | None = None,
) -> App:
    store = open_store(config)
    sinks: dict[str, JournalSink] = {}

    def sink(name: str) -> JournalSink:
        if name not in sinks:
            sinks[name] = (sink_factory or (lambda n: make_sink(config, n)))(name)
        return sinks[name]

    services = Services(
        master=load_master_data(Path(config.ledger["master_data"])),
        rules=load_posting_rules(Path(config.ledger["posting_rules"])),
        target=config.ledger["target"],
        sinks=sink,
        post_batch_size=config.worker["post_batch_size"],
    )
    return App(config, store, services, clock or SystemClock(), sinks)


def setup_erp_from_config(config: Config, output_name: str, year: int) -> SetupReport:
    """``revbridge erp setup``: companies, fiscal year and chart from the master data."""
    output = config.output(output_name)
    if output.type != "erp_tryton":
        raise ConfigurationError(f"output {output_name!r} is not an erp_tryton output")
    master = load_master_data(Path(config.ledger["master_data"]))
    options = output.options
    rpc = TrytonRPC(
        options["url"],
        options["database"],
        options["user"],
        options["password"].reveal(),
        timeout=options["timeout_seconds"],
    )
    return setup_erp(
        rpc,
        entities=[EntitySpec(e.code, e.name) for e in master.entities.values()],
        accounts=[AccountSpec(a.code, a.name, a.kind) for a in master.accounts.values()],
        fiscal_year=year,
        journal_code=options["journal"],
    )
