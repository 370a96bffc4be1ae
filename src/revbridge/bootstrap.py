"""The composition root: the only module that names concrete classes.

It turns a validated ``Config`` into a running application: the store (migrated, its
durability checked), master data and posting rules, the outputs, and the job handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revbridge.config import (
    API_SPEC,
    API_USER_SPEC,
    EXCEPTIONS_SPEC,
    LEDGER_SPEC,
    RETENTION_SPEC,
    WORKER_SPEC,
    Config,
    find_config,
    load_config,
)
from revbridge.errors import ConfigurationError
from revbridge.ingest import x12_files
from revbridge.ledger.master_data import load_master_data
from revbridge.ledger.posting_rules import load_posting_rules
from revbridge.normalise import x12_835
from revbridge.orchestrate.clock import Clock, SystemClock
from revbridge.orchestrate.handlers import Services, handlers
from revbridge.orchestrate.replay import BULK_REPLAY, Replayer
from revbridge.orchestrate.retention import RetentionJob, RetentionPolicy
from revbridge.orchestrate.target_guard import GuardPolicy, TargetGuard
from revbridge.orchestrate.work_queue import QueueSettings, WorkQueue
from revbridge.orchestrate.worker import Worker
from revbridge.post import erp_tryton, gl_file, parquet_export
from revbridge.post.base import JournalSink
from revbridge.post.tryton_rpc import TrytonRPC
from revbridge.post.tryton_setup import AccountSpec, EntitySpec, SetupReport, setup_erp
from revbridge.registry import ComponentSpec
from revbridge.store import postgres, sqlite
from revbridge.store.base import Store

COMPONENT_SPECS: tuple[ComponentSpec, ...] = (
    sqlite.SPEC,
    postgres.SPEC,
    x12_files.SPEC,
    x12_835.SPEC,
    erp_tryton.SPEC,
    gl_file.SPEC,
    parquet_export.SPEC,
)
SPECS = {(s.section, s.type): s for s in COMPONENT_SPECS}
ALL_SPECS = (
    *COMPONENT_SPECS,
    LEDGER_SPEC,
    WORKER_SPEC,
    EXCEPTIONS_SPEC,
    API_SPEC,
    API_USER_SPEC,
    RETENTION_SPEC,
)


def read_config(explicit: str | None) -> Config:
    return load_config(find_config(explicit), SPECS)


def open_store(config: Config) -> Store:
    options = config.store.options
    if config.store.type == "postgres":  # refuses non-durable settings, then migrates
        return postgres.PostgresStore.open(
            options["dsn"].reveal(),
            pool_size=options["pool_size"],
            connect_timeout_seconds=options["connect_timeout_seconds"],
        )
    if config.store.type != "sqlite":
        raise ConfigurationError(f"store type {config.store.type!r} is not available")
    store = sqlite.SQLiteStore(Path(options["path"]))
    store.migrate()
    store.check_durability()
    return store


def make_exports(config: Config) -> dict[str, parquet_export.ParquetExport]:
    """The configured Parquet exports, by output name."""
    return {
        output.name: parquet_export.ParquetExport(
            Path(output.options["path"]), output.options["batch_size"]
        )
        for output in config.outputs
        if output.type == "parquet_export"
    }


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
    guards: dict[str, TargetGuard] = field(default_factory=dict)  # one per output

    def work_queue(self) -> WorkQueue:
        """The exception work queue (and its approvals) people use from the CLI and API."""
        settings = QueueSettings.from_config(self.config.exceptions)
        queue = WorkQueue(self.store, self.clock, settings, self.services)
        # One approvals queue for every kind: `approvals approve` carries out bulk replays too.
        extra = {BULK_REPLAY: self.replayer().execute}
        queue.approvals.executors = {**queue.approvals.executors, **extra}
        return queue

    def replayer(self) -> Replayer:
        """Replay of stored messages under chosen mapping and rule versions."""
        return Replayer(self.store, self.clock, self.services.master, self.services.target)

    def retention_job(self) -> RetentionJob:
        """The retention job under the config's policy (none: nothing is dropped), with the
        Parquet export it must wait for, if the policy names one."""
        settings = self.config.retention
        policy = None if settings is None else RetentionPolicy.from_config(settings)
        archive = None
        if policy is not None and policy.archive is not None:
            archive = make_exports(self.config).get(policy.archive)
        return RetentionJob(self.store, self.clock, policy, archive)

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
    clock = clock or SystemClock()
    sinks: dict[str, JournalSink] = {}
    guards = make_guards(config, clock)

    def sink(name: str) -> JournalSink:
        if name not in sinks:
            sinks[name] = (sink_factory or (lambda n: make_sink(config, n)))(name)
        return sinks[name]

    def guard(name: str) -> TargetGuard:
        if name not in guards:  # a sink outside the config (tests): no limits of its own
            guards[name] = TargetGuard(name, GuardPolicy(), clock)
        return guards[name]

    services = Services(
        master=load_master_data(Path(config.ledger["master_data"])),
        rules=load_posting_rules(Path(config.ledger["posting_rules"])),
        target=config.ledger["target"],
        sinks=sink,
        post_batch_size=config.worker["post_batch_size"],
        guards=guard,
    )
    return App(config, store, services, clock, sinks, guards)


def make_guards(config: Config, clock: Clock) -> dict[str, TargetGuard]:
    """One guard per output, so every call to a target shares its limits and breaker."""
    return {
        o.name: TargetGuard(o.name, guard_policy(o.name, o.options), clock) for o in config.outputs
    }


def guard_policy(name: str, options: Mapping[str, Any]) -> GuardPolicy:
    """An output's limit fields (``post/limits.py``); one that has none is unguarded."""
    default = GuardPolicy()
    try:
        return GuardPolicy(
            rate_per_second=float(options.get("rate_per_second", default.rate_per_second)),
            burst=int(options.get("burst", default.burst)),
            max_in_flight=int(options.get("max_in_flight", default.max_in_flight)),
            breaker_failures=int(options.get("breaker_failures", default.breaker_failures)),
            breaker_open_seconds=float(
                options.get("breaker_open_seconds", default.breaker_open_seconds)
            ),
            half_open_probes=int(options.get("half_open_probes", default.half_open_probes)),
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc), location=f"outputs.{name}") from exc


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
