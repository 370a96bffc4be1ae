"""The retention job: whole months of raw messages and events go once the policy lets them.

DESIGN.md §6: old data is dropped (or archived first) in bulk, never row by row. The store
keeps each month apart (``RetentionRepository``: partitions on PostgreSQL, recorded key
ranges on SQLite); this module decides which months go, and why the others stay.

Each run first *advances*: the current month becomes the one new rows go to (PostgreSQL also
creates its partitions and next month's). Then every month of each family is settled, in
this order:

1. a **current** month stays (new rows still go there);
2. a month stays while its newest row is younger than the family's keep months, counted in
   whole months back from the first day of the current month (``keep_raw_months = 84``:
   in November 2026, a month goes once it holds nothing received after 2019-11-01);
3. events, with an ``archive`` (a ``parquet_export`` output): a month stays until that
   export holds every one of its events (``revbridge export``). Raw bytes are not part of
   the Parquet export: raw months are dropped without archive;
4. a month stays while open work needs it: pending units, unfinished jobs (parked ones
   too), journals not posted, open exception items (``RetentionRepository.open_work``);
5. otherwise it is dropped, in one unit of work that checks open work again, removes the
   month and records ``retention.month_dropped`` in the audit log.

The audit-trail floor: journals' source references lead back to units, events and raw
messages, so neither keep setting may be below ``minimum_months`` (84 months, seven years)
unless ``allow_below_minimum`` says so in the config. Units and journals are never dropped:
a unit outlives its raw message as the record of what it held (control numbers, hash).

Without a ``retention`` section nothing is ever dropped, but the job still advances months
(``serve`` runs it; in a deployment of ``revbridge worker`` processes, run ``revbridge
retention`` from cron, hourly).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol

from revbridge.config import RETENTION_KEEP_MONTHS, retention_problems
from revbridge.errors import ConfigurationError, StoreError
from revbridge.orchestrate.clock import Clock
from revbridge.store.base import Family, MonthPartition, Store, add_months, month_of

log = logging.getLogger(__name__)

ACTOR = "revbridge"
AUDIT_ACTION = "retention.month_dropped"


class Archive(Protocol):
    """Where events are archived before they are dropped (``ParquetExport`` is one)."""

    def watermark(self, table: str) -> int:
        """The highest key of ``table`` the archive holds (0: nothing)."""
        ...


class Action:
    KEEP = "keep"
    DROP = "drop"  # a dry run's "would drop"
    DROPPED = "dropped"
    FAILED = "failed"  # the store refused (a lock not granted in time): tried again next run


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How many whole months each family is kept, and the floor below which it may not go."""

    keep_raw_months: int = RETENTION_KEEP_MONTHS
    keep_event_months: int = RETENTION_KEEP_MONTHS
    minimum_months: int = RETENTION_KEEP_MONTHS
    allow_below_minimum: bool = False
    archive: str | None = None
    run_every_hours: float = 24.0

    def __post_init__(self) -> None:
        problems = retention_problems(
            {
                "keep_raw_months": self.keep_raw_months,
                "keep_event_months": self.keep_event_months,
                "minimum_months": self.minimum_months,
                "allow_below_minimum": self.allow_below_minimum,
            }
        )
        if problems:
            raise ConfigurationError(
                "; ".join(f"{name}: {message}" for name, message in problems),
                location="retention",
            )

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> RetentionPolicy:
        """From the validated ``retention`` section (missing keys keep the defaults)."""
        defaults = cls()
        return cls(
            keep_raw_months=int(values.get("keep_raw_months", defaults.keep_raw_months)),
            keep_event_months=int(values.get("keep_event_months", defaults.keep_event_months)),
            minimum_months=int(values.get("minimum_months", defaults.minimum_months)),
            allow_below_minimum=bool(values.get("allow_below_minimum", False)),
            archive=values.get("archive"),
            run_every_hours=float(values.get("run_every_hours", defaults.run_every_hours)),
        )

    def keep_months(self, family: str) -> int:
        return self.keep_raw_months if family == Family.RAW else self.keep_event_months


@dataclass(frozen=True, slots=True)
class Decision:
    month: MonthPartition
    action: str
    reason: str
    rows_dropped: int = 0

    def as_dict(self) -> dict[str, Any]:
        month = self.month
        return {
            "family": month.family,
            "month": f"{month.month:%Y-%m}",
            "action": self.action,
            "reason": self.reason,
            "low": month.low,
            "high": month.high,
            "rows": month.rows,
            "first_key": month.first_key,
            "last_key": month.last_key,
            "first_at": _iso(month.first_at),
            "last_at": _iso(month.last_at),
            "opened_at": _iso(month.opened_at),
            "closed_at": _iso(month.closed_at),
            "rows_dropped": self.rows_dropped,
        }


@dataclass
class RetentionReport:
    at: datetime
    dry_run: bool
    policy: RetentionPolicy | None
    created: list[MonthPartition] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def cutoff(self, family: str) -> datetime | None:
        return None if self.policy is None else cutoff(self.at, self.policy.keep_months(family))

    @property
    def failed(self) -> bool:
        return any(d.action == Action.FAILED for d in self.decisions)

    def as_dict(self) -> dict[str, Any]:
        policy = self.policy
        return {
            "at": self.at.isoformat(),
            "dry_run": self.dry_run,
            "configured": policy is not None,
            "keep_months": None
            if policy is None
            else {family: policy.keep_months(family) for family in Family.ALL},
            "cutoff": {family: _iso(self.cutoff(family)) for family in Family.ALL},
            "archive": None if policy is None else policy.archive,
            "created": [{"family": m.family, "month": f"{m.month:%Y-%m}"} for m in self.created],
            "months": [decision.as_dict() for decision in self.decisions],
        }


def cutoff(now: datetime, keep_months: int) -> datetime:
    """Rows at or after this instant are kept: ``keep_months`` whole months back from the
    first day of ``now``'s month (UTC)."""
    return datetime.combine(add_months(month_of(now), -keep_months), time(), tzinfo=UTC)


class RetentionJob:
    """Advance the months, then drop those the policy lets go (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        policy: RetentionPolicy | None,
        archive: Archive | None = None,
    ) -> None:
        if policy is not None and policy.archive is not None and archive is None:
            raise ConfigurationError(
                f"archive {policy.archive!r} is not a parquet_export output", location="retention"
            )
        self.store, self.clock, self.policy, self.archive = store, clock, policy, archive

    def advance(self) -> list[MonthPartition]:
        """Make the current month the one new rows go to (its own unit of work)."""
        with self.store.unit_of_work() as uow:
            return uow.retention.advance(self.clock.now())

    def run(self, *, dry_run: bool = False) -> RetentionReport:
        created = [] if dry_run else self.advance()
        report = RetentionReport(self.clock.now(), dry_run, self.policy, created)
        for family in Family.ALL:
            with self.store.unit_of_work() as uow:
                months = uow.retention.months(family)
            report.decisions += [self._settle(month, report) for month in months]
        return report

    # -------------------------------------------------------------------------- deciding

    def _settle(self, month: MonthPartition, report: RetentionReport) -> Decision:
        kept = self._reason_to_keep(month, report)
        if kept is not None:
            return Decision(month, Action.KEEP, kept)
        reason = self._reason_to_drop(month, report)
        if report.dry_run:
            return self._check_open_work(month, reason)
        return self._drop(month, reason)

    def _reason_to_keep(self, month: MonthPartition, report: RetentionReport) -> str | None:
        if month.current:
            return "current: new rows go here"
        if self.policy is None:
            return "retention is not configured (no retention section): everything is kept"
        limit = report.cutoff(month.family)
        newest = month.newest
        if limit is not None and newest is not None and newest >= limit:
            keep = self.policy.keep_months(month.family)
            return (
                f"within {keep} months: holds rows up to {newest:%Y-%m-%d %H:%M} UTC"
                f" (months go once nothing in them is later than {limit:%Y-%m-%d})"
            )
        return self._not_archived(month)

    def _not_archived(self, month: MonthPartition) -> str | None:
        """Events the archive does not hold yet stay (raw bytes are not archived)."""
        if self.archive is None or self.policy is None or self.policy.archive is None:
            return None
        if month.family != Family.EVENTS or month.last_key is None:
            return None
        exported = self.archive.watermark("events")
        if exported >= month.last_key:
            return None
        return (
            f"not archived yet: export {self.policy.archive!r} holds events up to position"
            f" {exported}, this month goes to {month.last_key}; run `revbridge export`"
        )

    def _reason_to_drop(self, month: MonthPartition, report: RetentionReport) -> str:
        limit = report.cutoff(month.family)
        newest = "no rows" if month.newest is None else f"{month.newest:%Y-%m-%d %H:%M} UTC"
        reason = f"past retention: newest {newest}, before {limit:%Y-%m-%d}" if limit else ""
        if month.family == Family.EVENTS and self.policy is not None and self.policy.archive:
            reason += f"; archived in {self.policy.archive!r}"
        return reason

    # ------------------------------------------------------------------------- dropping

    def _check_open_work(self, month: MonthPartition, reason: str) -> Decision:
        with self.store.unit_of_work() as uow:
            work = uow.retention.open_work(month.family, month.month)
        if work.reasons():
            return Decision(month, Action.KEEP, "open work: " + ", ".join(work.reasons()))
        return Decision(month, Action.DROP, reason)

    def _drop(self, month: MonthPartition, reason: str) -> Decision:
        try:
            with self.store.unit_of_work() as uow:
                work = uow.retention.open_work(month.family, month.month)
                if work.reasons():
                    return Decision(month, Action.KEEP, "open work: " + ", ".join(work.reasons()))
                rows = uow.retention.drop(month.family, month.month)
                uow.audit.record(
                    ACTOR,
                    AUDIT_ACTION,
                    "partition",
                    f"{month.family}:{month.month:%Y-%m}",
                    self._audit_detail(month, reason, rows),
                )
        except StoreError as exc:
            log.warning("retention: %s %s not dropped: %s", month.family, month.month, exc)
            return Decision(month, Action.FAILED, str(exc))
        log.info("retention: dropped %s %s (%d rows)", month.family, month.month, rows)
        return Decision(month, Action.DROPPED, reason, rows)

    def _audit_detail(self, month: MonthPartition, reason: str, rows: int) -> dict[str, Any]:
        policy = self.policy
        detail: dict[str, Any] = {
            "family": month.family,
            "month": f"{month.month:%Y-%m}",
            "low": month.low,
            "high": month.high,
            "rows": rows,
            "first_at": _iso(month.first_at),
            "last_at": _iso(month.last_at),
            "closed_at": _iso(month.closed_at),
            "reason": reason,
            "keep_months": None if policy is None else policy.keep_months(month.family),
        }
        if month.family == Family.EVENTS and self.archive is not None and policy is not None:
            detail["archive"] = policy.archive
            detail["archived_through"] = self.archive.watermark("events")
        return detail


class RetentionSchedule:
    """When a long-running process (``serve``) runs the job: ``advance`` at most every
    ``advance_every`` (a new month is taken up within that), the whole job every
    ``policy.run_every_hours`` (24 without a policy). A failure is logged, never raised:
    the process goes on and the next run tries again."""

    def __init__(self, job: RetentionJob, *, advance_every: timedelta = timedelta(hours=1)) -> None:
        hours = job.policy.run_every_hours if job.policy is not None else 24.0
        self.job, self.run_every, self.advance_every = job, timedelta(hours=hours), advance_every
        self._next_run: datetime | None = None
        self._next_advance: datetime | None = None

    def tick(self) -> RetentionReport | None:
        """Do what is due now; returns the report of a whole run, if one ran."""
        now = self.job.clock.now()
        try:
            if self._next_run is None or now >= self._next_run:
                self._next_run = now + self.run_every
                self._next_advance = now + self.advance_every
                return self.job.run()
            if self._next_advance is None or now >= self._next_advance:
                self._next_advance = now + self.advance_every
                self.job.advance()
        except StoreError as exc:
            log.warning("retention: %s (tried again on the next run)", exc)
        return None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
