"""Replay: stored raw messages through a chosen mapping version and posting-rule set.

Normalise is a pure function of (bytes, mapping version) and the ledger one of (events,
rule version) (DESIGN.md §3), so running the stored bytes again shows exactly what other
versions would change. A dry run reports the differences; applying never touches what was
posted: for each journal whose money changes it prepares a *reversal* of the journal in
effect and an *adjusting* journal built with the chosen versions, through the same outbox
and post job as any journal.

Keys are ``<key>~rev<n>`` and ``<key>~adj<n>``, where ``<key>`` is the journal's original
key and ``n`` the step (1 for the first replay that changed it). They follow from the state
alone, so applying the same replay again finds nothing to change, and two replays racing
on one payment collide on the same key: one commits, the other rolls back. Which journal
is in effect is read from the ``journal.prepared`` events, which record the step.

The event log is history and is not rewritten: replay reports event differences and books
journals whose lines still point at the raw segments they came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from revbridge.domain.events import Event, EventType
from revbridge.domain.journal import Journal, JournalLine, JournalStatus
from revbridge.domain.master import MasterData
from revbridge.domain.money import money_str
from revbridge.errors import ActionRefused, ConfigurationError
from revbridge.ledger.posting_rules import PostingRules, load_posting_rules
from revbridge.ledger.remittance import build_remittance_journals
from revbridge.normalise import x12_835
from revbridge.normalise.x12_835 import Normalised, Rejected, UnitInput
from revbridge.orchestrate.approvals import Approvals
from revbridge.orchestrate.clock import Clock
from revbridge.orchestrate.handlers import POST, prepare_journal, unit_input
from revbridge.orchestrate.replay_diff import (
    EventDiff,
    JournalChange,
    LineDiff,
    diff_events,
    diff_lines,
    journal_change,
)
from revbridge.store.base import (
    Approval,
    JournalRecord,
    NewException,
    Store,
    Unit,
    UnitOfWork,
    UnitStatus,
)

BULK_REPLAY = "bulk_replay"

Normaliser = Callable[[UnitInput, datetime], Normalised | Rejected]

MAPPINGS: Mapping[str, Normaliser] = {
    x12_835.MAPPING_VERSION: x12_835.normalise_835,
    x12_835.FLAT_MAPPING_VERSION: x12_835.normalise_835_flat,
}
"""Mapping versions a replay may choose. A new version of a normaliser is added here next
to the old one (never in its place), so stored messages can be replayed under either."""

REPLAYABLE_KIND = "x12.835"
LEDGER_EVENTS = frozenset(
    {
        EventType.JOURNAL_PREPARED,
        EventType.JOURNAL_POSTED,
        EventType.JOURNAL_FAILED,
        EventType.EXCEPTION_OPENED,
    }
)
RULE_REASONS = frozenset({"unmapped_code"})
"""Exception items that depend on the rule set, opened again when a replay books to suspense.
The others (denials, unknown payer or payee) were opened when the message first came in."""

PAGE = 500

ORIGINAL, REVERSAL, ADJUSTMENT = "original", "reversal", "adjustment"


# ---------------------------------------------------------------------------- versions


def normaliser(version: str) -> Normaliser:
    """The normaliser of a mapping version; an unknown version is refused, never guessed."""
    if version not in MAPPINGS:
        raise ActionRefused(
            f"no mapping version {version!r} (known: {', '.join(sorted(MAPPINGS))})"
        )
    return MAPPINGS[version]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A posting-rule set chosen by file. The hash lets a second person's approval carry out
    exactly the rules that were reviewed, not whatever the file holds by then."""

    rules: PostingRules
    path: Path
    sha256: str


def load_rule_set(path: Path) -> RuleSet:
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigurationError(str(exc), location=str(path)) from exc
    return RuleSet(load_posting_rules(path), path.resolve(), digest)


@dataclass(frozen=True, slots=True)
class Versions:
    mapping: str
    rules: RuleSet

    def __post_init__(self) -> None:
        normaliser(self.mapping)

    @property
    def label(self) -> str:
        return f"{self.mapping}@{self.rules.rules.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "mapping_version": self.mapping,
            "rule_version": self.rules.rules.version,
            "rules_file": str(self.rules.path),
            "rules_sha256": self.rules.sha256,
        }


def versions_from(subject: Mapping[str, Any]) -> Versions:
    """The versions an approval request names; refused if the rules file changed since."""
    rules = load_rule_set(Path(str(subject["rules_file"])))
    if rules.sha256 != subject["rules_sha256"]:
        raise ActionRefused(
            f"posting rules {rules.path} changed since the replay was requested; request it again"
        )
    return Versions(str(subject["mapping_version"]), rules)


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True, slots=True)
class Selection:
    """What to replay. Criteria combine (a message must meet all given); ``everything``
    must be asked for explicitly, so a forgotten criterion never replays the whole store."""

    raw_ids: tuple[int, ...] = ()
    payment: str | None = None  # a payment key (TRN03:TRN02) or a TRN
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before
    everything: bool = False

    def check(self) -> None:
        narrowed = bool(self.raw_ids) or self.payment is not None or self._timed
        if self.everything and narrowed:
            raise ActionRefused("replaying everything takes no other criterion")
        if not (self.everything or narrowed):
            raise ActionRefused(
                "say what to replay: raw message ids, a payment or TRN, a time range, or all"
            )
        for bound in (self.since, self.until):
            if bound is not None and bound.utcoffset() is None:
                raise ActionRefused(f"{bound.isoformat()} has no time zone")
        if self.since and self.until and self.since >= self.until:
            raise ActionRefused("the time range is empty (since is not before until)")

    @property
    def _timed(self) -> bool:
        return self.since is not None or self.until is not None

    def admits(self, unit: Unit, received_at: datetime) -> bool:
        if self.raw_ids and unit.raw_id not in self.raw_ids:
            return False
        if self.since is not None and received_at < self.since:
            return False
        return self.until is None or received_at < self.until

    def as_dict(self) -> dict[str, Any]:
        return {
            "raw_ids": list(self.raw_ids),
            "payment": self.payment,
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "all": self.everything,
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    """A selected unit that cannot be replayed (rejected, a resend, not an 835)."""

    unit_id: int
    raw_id: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"unit_id": self.unit_id, "raw_id": self.raw_id, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Selected:
    selection: Selection
    unit_ids: tuple[int, ...]
    skipped: tuple[Skipped, ...]


def _skip_reason(unit: Unit) -> str | None:
    if unit.kind != REPLAYABLE_KIND:
        return f"{unit.kind} has no replayable mapping"
    if unit.status != UnitStatus.NORMALISED:
        return f"unit is {unit.status}" + (f": {unit.reason}" if unit.reason else "")
    return None


def _payment_units(uow: UnitOfWork, payment: str) -> list[Unit]:
    ids = {
        s.event.source.unit_id
        for s in uow.events.by_key(payment)
        if s.event.type == EventType.REMITTANCE_RECEIVED
    }
    if not ids:
        raise ActionRefused(f"no payment or TRN {payment!r} was received")
    return [uow.units.get(unit_id) for unit_id in sorted(ids)]


def _raw_units(uow: UnitOfWork, raw_ids: Sequence[int]) -> list[Unit]:
    units: list[Unit] = []
    for raw_id in raw_ids:
        try:
            uow.raw.get(raw_id)
        except KeyError as exc:
            raise ActionRefused(f"no raw message {raw_id}") from exc
        units += uow.units.by_raw(raw_id)
    return units


def _admitted(uow: UnitOfWork, selection: Selection, units: Iterable[Unit]) -> list[Unit]:
    received: dict[int, datetime] = {}
    kept: dict[int, Unit] = {}
    for unit in units:
        if unit.raw_id not in received:
            received[unit.raw_id] = uow.raw.get(unit.raw_id).received_at
        if selection.admits(unit, received[unit.raw_id]):
            kept[unit.id] = unit
    return [kept[unit_id] for unit_id in sorted(kept)]


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class JournalDiff:
    """One original journal key: what is in effect now and what the chosen versions build."""

    key: str
    change: JournalChange
    step: int | None  # the last step prepared under this key; None: nothing ever was
    in_effect: JournalRecord | None
    rebuilt: Journal | None
    lines: tuple[LineDiff, ...]

    @property
    def postings(self) -> int:
        """How many journals applying prepares for this key (a reversal, an adjustment)."""
        if self.change is JournalChange.UNCHANGED:
            return 0
        return int(self.in_effect is not None) + int(self.rebuilt is not None)

    def as_dict(self) -> dict[str, Any]:
        before = self.in_effect.journal if self.in_effect else None
        return {
            "key": self.key,
            "change": str(self.change),
            "in_effect": before.key if before else None,
            "in_effect_status": str(self.in_effect.status) if self.in_effect else None,
            "rule_version_before": before.rule_version if before else None,
            "rule_version_after": self.rebuilt.rule_version if self.rebuilt else None,
            "total_before": money_str(before.total) if before else None,
            "total_after": money_str(self.rebuilt.total) if self.rebuilt else None,
            "lines": [line.as_dict() for line in self.lines],
        }


@dataclass(frozen=True, slots=True)
class PaymentDiff:
    """What replaying one unit (one payment) changes."""

    payment: str
    raw_id: int
    unit_id: int
    events: tuple[EventDiff, ...] = ()
    journals: tuple[JournalDiff, ...] = ()
    exceptions: tuple[NewException, ...] = ()
    blocked: str | None = None  # why applying must leave this payment alone
    cause: Event | None = None  # the stored remittance.received the journals follow from

    @property
    def to_post(self) -> tuple[JournalDiff, ...]:
        return tuple(j for j in self.journals if j.change is not JournalChange.UNCHANGED)

    @property
    def applicable(self) -> bool:
        return self.blocked is None and bool(self.to_post)

    @property
    def differs(self) -> bool:
        return bool(self.events or self.to_post or self.blocked)

    def as_dict(self) -> dict[str, Any]:
        return {
            "payment": self.payment,
            "raw_id": self.raw_id,
            "unit_id": self.unit_id,
            "blocked": self.blocked,
            "events": [e.as_dict() for e in self.events],
            "journals": [j.as_dict() for j in self.journals],
            "exceptions": [{"reason": x.reason, "detail": x.detail} for x in self.exceptions],
        }


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """A dry run: the payments that differ (all of them), and counts of the rest."""

    versions: Versions
    selection: Selection
    payments: tuple[PaymentDiff, ...]
    unchanged: int
    skipped: tuple[Skipped, ...]

    @property
    def applicable(self) -> tuple[PaymentDiff, ...]:
        return tuple(p for p in self.payments if p.applicable)

    @property
    def bulk(self) -> bool:
        """Applying touches more than one payment or raw message: a second person decides."""
        ready = self.applicable
        return len(ready) > 1 or len({p.raw_id for p in ready}) > 1

    def summary(self) -> dict[str, int]:
        return {
            "units": len(self.payments) + self.unchanged,
            "unchanged": self.unchanged,
            "differ": len(self.payments),
            "to_apply": len(self.applicable),
            "journals_to_post": sum(j.postings for p in self.applicable for j in p.to_post),
            "blocked": sum(1 for p in self.payments if p.blocked),
            "skipped": len(self.skipped),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.versions.as_dict(),
            "selection": self.selection.as_dict(),
            "summary": self.summary(),
            "payments": [p.as_dict() for p in self.payments],
            "skipped": [s.as_dict() for s in self.skipped],
        }


@dataclass(frozen=True, slots=True)
class Applied:
    versions: Versions
    payments: tuple[str, ...]
    journals: tuple[str, ...]  # keys prepared, in order
    reversals: int
    blocked: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.versions.as_dict(),
            "payments": list(self.payments),
            "journals": list(self.journals),
            "reversals": self.reversals,
            "adjustments": len(self.journals) - self.reversals,
            "blocked": list(self.blocked),
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What ``apply`` did: posted directly, asked a second person, or found nothing to do."""

    applied: Applied | None = None
    approval: Approval | None = None


# --------------------------------------------------------------------------- comparing


@dataclass
class _Chain:
    """The journals prepared under one original key, step by step (role -> key)."""

    steps: dict[int, dict[str, str]] = field(default_factory=dict)

    @property
    def last(self) -> int:
        return max(self.steps)

    def in_effect(self) -> str | None:
        roles = self.steps[self.last]
        return roles.get(ORIGINAL) or roles.get(ADJUSTMENT)


def _chains(prepared: Iterable[Event]) -> dict[str, _Chain]:
    chains: dict[str, _Chain] = {}
    for event in prepared:
        key = event.keys["journal"]
        replay = event.data.get("replay")
        if isinstance(replay, Mapping):
            base, step, role = str(replay["base"]), int(replay["step"]), str(replay["role"])
        else:
            base, step, role = key, 0, ORIGINAL
        chains.setdefault(base, _Chain()).steps.setdefault(step, {})[role] = key
    return chains


def _record(uow: UnitOfWork, key: str | None) -> JournalRecord | None:
    if key is None:
        return None
    record = uow.journals.get(key)
    if record is None:
        raise LookupError(f"journal {key} was prepared but is not stored")
    return record


def _journal_diffs(
    uow: UnitOfWork, chains: Mapping[str, _Chain], rebuilt: Sequence[Journal]
) -> Iterator[JournalDiff]:
    built = {j.key: j for j in rebuilt}
    for key in sorted(chains.keys() | built.keys()):
        chain = chains.get(key)
        record = _record(uow, chain.in_effect()) if chain else None
        before, after = (record.journal if record else None), built.get(key)
        change = journal_change(before, after)
        if change is not None:
            lines = tuple(diff_lines(before, after))
            yield JournalDiff(key, change, chain.last if chain else None, record, after, lines)


def _blocked(journals: Iterable[JournalDiff]) -> str | None:
    """A journal the target refused cannot be reversed: it was never booked."""
    for diff in journals:
        record = diff.in_effect
        if diff.postings and record is not None and record.status == JournalStatus.FAILED:
            return (
                f"journal {record.journal.key} was refused by {record.target}; "
                "resolve its erp_rejected item first"
            )
    return None


def diff_unit(
    uow: UnitOfWork, unit_id: int, versions: Versions, master: MasterData, now: datetime
) -> PaymentDiff:
    """Normalise the stored bytes again and compare with what is stored and in effect."""
    source, raw = unit_input(uow, unit_id)
    result = normaliser(versions.mapping)(source, now)
    if isinstance(result, Rejected):
        reason = f"mapping {versions.mapping} rejects it: {result.issues[0].message}"
        return PaymentDiff(f"unit {unit_id}", raw.id, unit_id, blocked=reason)
    stored = [s.event for s in uow.events.by_key(result.payment_key)]
    before = [e for e in stored if e.source.unit_id == unit_id and e.type not in LEDGER_EVENTS]
    cause = next((e for e in before if e.type == EventType.REMITTANCE_RECEIVED), None)
    if cause is None:
        reason = f"no events of this unit are stored under payment {result.payment_key}"
        return PaymentDiff(result.payment_key, raw.id, unit_id, blocked=reason)
    built = build_remittance_journals(result.events, master, versions.rules.rules)
    prepared = (e for e in stored if e.type == EventType.JOURNAL_PREPARED)
    journals = tuple(_journal_diffs(uow, _chains(prepared), built.journals))
    return PaymentDiff(
        payment=result.payment_key,
        raw_id=raw.id,
        unit_id=unit_id,
        events=tuple(diff_events(before, result.events)),
        journals=journals,
        exceptions=tuple(x for x in built.exceptions if x.reason in RULE_REASONS),
        blocked=_blocked(journals),
        cause=cause,
    )


# ----------------------------------------------------------------------------- applying


def _reversal(record: JournalRecord, key: str, day: date, versions: Versions) -> Journal:
    original = record.journal
    lines = tuple(
        JournalLine(
            line.account,
            line.credit,
            line.debit,
            f"reversal: {line.description}",
            line.dimensions,
            line.source,
        )
        for line in original.lines
    )
    return Journal(
        key=key,
        entity=original.entity,
        date=day,
        description=f"reversal of {original.key} (replay {versions.label})",
        lines=lines,
        rule_version=versions.rules.rules.version,
        currency=original.currency,
        kind=original.kind,
    )


def _step_journals(
    diff: JournalDiff, versions: Versions, day: date
) -> list[tuple[Journal, dict[str, Any]]]:
    """The reversal and/or adjusting journal for one key, with what their events record.
    A key never prepared before (the journal job has not run, or built nothing) takes the
    original key itself, so the journal job can never add a second journal beside it."""
    step = 0 if diff.step is None else diff.step + 1
    detail = {"base": diff.key, "step": step, **versions.as_dict()}
    journals: list[tuple[Journal, dict[str, Any]]] = []
    if diff.in_effect is not None:
        reversal = _reversal(diff.in_effect, f"{diff.key}~rev{step}", day, versions)
        reverses = diff.in_effect.journal.key
        journals.append((reversal, {**detail, "role": REVERSAL, "reverses": reverses}))
    if diff.rebuilt is not None:
        adjusting = dataclasses.replace(
            diff.rebuilt,
            key=diff.key if step == 0 else f"{diff.key}~adj{step}",
            date=day,
            description=f"{diff.rebuilt.description} (replay {versions.label})",
        )
        journals.append((adjusting, {**detail, "role": ADJUSTMENT}))
    return journals


def _apply_payment(
    uow: UnitOfWork, diff: PaymentDiff, versions: Versions, target: str, day: date
) -> list[tuple[str, str]]:
    """Prepare the payment's reversals and adjustments; returns (key, role) of each."""
    if diff.cause is None:
        raise ActionRefused(f"payment {diff.payment}: nothing stored to follow from")
    keys: list[tuple[str, str]] = []
    for journal_diff in diff.to_post:
        for journal, detail in _step_journals(journal_diff, versions, day):
            if not prepare_journal(
                uow, journal, target, diff.unit_id, diff.cause, {"replay": detail}
            ):
                raise ActionRefused(
                    f"journal {journal.key} exists: payment {diff.payment} was replayed "
                    "meanwhile; run the replay again"
                )
            keys.append((journal.key, str(detail["role"])))
    for item in diff.exceptions:
        uow.exceptions.open(item)
    return keys


# ------------------------------------------------------------------------------ service


@dataclass(frozen=True, slots=True)
class Replayer:
    """Select, compare, apply. ``execute`` is the approval executor for bulk replays."""

    store: Store
    clock: Clock
    master: MasterData
    target: str

    def select(self, selection: Selection) -> Selected:
        """The units to replay, and the selected ones that cannot be (with the reason)."""
        selection.check()
        ids: list[int] = []
        skipped: list[Skipped] = []
        for units in self._pages(selection):
            for unit in units:
                reason = _skip_reason(unit)
                if reason is None:
                    ids.append(unit.id)
                else:
                    skipped.append(Skipped(unit.id, unit.raw_id, reason))
        return Selected(selection, tuple(ids), tuple(skipped))

    def _pages(self, selection: Selection) -> Iterator[list[Unit]]:
        """Units in pages, one short transaction each: a long selection never holds the
        store for its whole length."""
        if selection.payment is not None or selection.raw_ids:
            with self.store.unit_of_work() as uow:
                named = (
                    _payment_units(uow, selection.payment)
                    if selection.payment is not None
                    else _raw_units(uow, selection.raw_ids)
                )
                units = _admitted(uow, selection, named)
            yield units
            return
        after = 0
        while True:
            with self.store.unit_of_work() as uow:
                raws = uow.raw.received(
                    selection.since, selection.until, after_id=after, limit=PAGE
                )
                units = [u for raw in raws for u in uow.units.by_raw(raw.id)]
            if not raws:
                return
            yield units
            after = raws[-1].id

    def dry_run(
        self, selected: Selected, versions: Versions, units: Iterable[int] | None = None
    ) -> ReplayResult:
        """Compare every selected unit (``units``: the same ids, e.g. behind a progress
        bar). Nothing is written."""
        differ: list[PaymentDiff] = []
        unchanged = 0
        for unit_id in selected.unit_ids if units is None else units:
            with self.store.unit_of_work() as uow:
                diff = diff_unit(uow, unit_id, versions, self.master, self.clock.now())
            if diff.differs:
                differ.append(diff)
            else:
                unchanged += 1
        return ReplayResult(
            versions, selected.selection, tuple(differ), unchanged, selected.skipped
        )

    def apply(self, result: ReplayResult, actor: str, approvals: Approvals) -> Outcome:
        """Post what the dry run found, at once for one payment; a bulk replay waits for a
        second person (``execute`` carries it out when they approve)."""
        ready = result.applicable
        if not ready:
            return Outcome()
        if result.bulk:
            subject = {
                **result.versions.as_dict(),
                "selection": result.selection.as_dict(),
                "unit_ids": [p.unit_id for p in ready],
                "payments": [p.payment for p in ready],
                "journals": result.summary()["journals_to_post"],
            }
            return Outcome(approval=approvals.request(BULK_REPLAY, subject, actor))
        with self.store.unit_of_work() as uow:
            applied = self.apply_units(uow, [p.unit_id for p in ready], result.versions, actor)
        return Outcome(applied=applied)

    def execute(self, uow: UnitOfWork, approval: Approval, actor: str) -> Mapping[str, Any]:
        """The ``bulk_replay`` executor (``orchestrate.approvals.Executor``): the approved
        units, compared again and applied inside the approval's transaction."""
        versions = versions_from(approval.subject)
        unit_ids = [int(u) for u in approval.subject["unit_ids"]]
        return self.apply_units(uow, unit_ids, versions, actor, approval).as_dict()

    def apply_units(
        self,
        uow: UnitOfWork,
        unit_ids: Sequence[int],
        versions: Versions,
        actor: str,
        approval: Approval | None = None,
    ) -> Applied:
        """Compare each unit again inside this transaction (what was compared earlier may
        be stale) and prepare the reversals and adjustments it needs."""
        now = self.clock.now()
        payments: list[str] = []
        journals: list[tuple[str, str]] = []
        blocked: list[str] = []
        for unit_id in unit_ids:
            diff = diff_unit(uow, unit_id, versions, self.master, now)
            if diff.blocked:
                blocked.append(f"{diff.payment}: {diff.blocked}")
            elif diff.to_post:
                journals += _apply_payment(uow, diff, versions, self.target, now.date())
                payments.append(diff.payment)
        if journals:
            uow.jobs.enqueue(POST, self.target, {"target": self.target})
        keys = tuple(key for key, _ in journals)
        reversals = sum(1 for _, role in journals if role == REVERSAL)
        applied = Applied(versions, tuple(payments), keys, reversals, tuple(blocked))
        _audit(uow, applied, actor, len(unit_ids), approval)
        return applied


def _audit(
    uow: UnitOfWork, applied: Applied, actor: str, units: int, approval: Approval | None
) -> None:
    uow.audit.record(
        actor,
        "replay.applied",
        "replay",
        applied.versions.label,
        {
            **applied.as_dict(),
            "units": units,
            "approval": None if approval is None else approval.id,
            "requested_by": None if approval is None else approval.requested_by,
        },
    )
