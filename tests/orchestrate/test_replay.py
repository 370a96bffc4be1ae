"""Replay: dry-run differences, reversal + adjustment on apply, never a duplicate, and a
second person for bulk replays. Real SQLite, the worked example, the GL file sink."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from revbridge import bootstrap
from revbridge.domain.events import EventType
from revbridge.domain.journal import JournalStatus
from revbridge.errors import ActionRefused
from revbridge.normalise.x12_835 import (
    FLAT_MAPPING_VERSION,
    MAPPING_VERSION,
    Normalised,
    Rejected,
    UnitInput,
    normalise_835,
)
from revbridge.orchestrate import replay
from revbridge.orchestrate.approvals import Approvals
from revbridge.orchestrate.replay import Outcome, Selection, Versions, load_rule_set
from revbridge.orchestrate.replay_diff import EventChange, JournalChange, LineDiff
from revbridge.store.base import ApprovalStatus, UnitStatus
from tests.conftest import WORKED_EXAMPLE
from tests.orchestrate.replay_support import (
    KEY,
    L6_TO_6890,
    OTHER_PAYMENT,
    PAYMENT,
    configured_rules,
    dry_run,
    journals,
    net_per_account,
    post,
    rules_file,
    second_payment,
)

DIMS = {
    "entity": "RHS",
    "facility": "H01",
    "payer": "ACME01",
    "financial_class": "commercial",
    "adjustment_reason": "PLB-L6",
}


@pytest.fixture
def approvals(app: bootstrap.App) -> Approvals:
    return app.work_queue().approvals


def outbox_and_events(app: bootstrap.App) -> tuple[int, int]:
    with app.store.unit_of_work() as uow:
        return uow.outbox.count(), uow.events.count()


# --------------------------------------------------------------------------- dry run


def test_same_versions_give_an_empty_diff_and_post_nothing(
    app: bootstrap.App, approvals: Approvals
) -> None:
    post(app, WORKED_EXAMPLE)
    before, counts = journals(app), outbox_and_events(app)
    result = dry_run(app, configured_rules(app))
    assert result.payments == ()
    assert result.summary()["unchanged"] == 1
    assert app.replayer().apply(result, "alice", approvals) == Outcome()
    assert journals(app) == before
    assert outbox_and_events(app) == counts


def test_dry_run_shows_exactly_the_changed_journal_and_lines(app: bootstrap.App) -> None:
    post(app, WORKED_EXAMPLE)
    before, counts = journals(app), outbox_and_events(app)
    result = dry_run(app, rules_file(app, "2025.2", L6_TO_6890))
    [payment] = result.payments
    assert (payment.payment, payment.events, payment.blocked) == (PAYMENT, (), None)
    assert {j.key: j.change for j in payment.journals} == {
        f"{KEY}:correction": JournalChange.UNCHANGED,
        f"{KEY}:remittance": JournalChange.CHANGED,
        f"{KEY}:reversal": JournalChange.UNCHANGED,
    }
    [changed] = payment.to_post
    assert changed.lines == (
        LineDiff("6810", DIMS, Decimal("-12.50"), Decimal("0")),
        LineDiff("6890", DIMS, Decimal("0"), Decimal("-12.50")),
    )
    assert result.summary()["journals_to_post"] == 2
    assert journals(app) == before
    assert outbox_and_events(app) == counts


# ----------------------------------------------------------------------------- apply


def test_apply_posts_a_reversal_and_an_adjustment_both_balanced(
    app: bootstrap.App, approvals: Approvals
) -> None:
    post(app, WORKED_EXAMPLE)
    outcome = app.replayer().apply(
        dry_run(app, rules_file(app, "2025.2", L6_TO_6890)), "alice", approvals
    )
    assert outcome.approval is None and outcome.applied is not None
    assert outcome.applied.journals == (f"{KEY}:remittance~rev1", f"{KEY}:remittance~adj1")
    app.worker().run_until_idle(max_wait_seconds=0)
    records = journals(app)
    original = records[f"{KEY}:remittance"].journal
    reversal, adjustment = records[f"{KEY}:remittance~rev1"], records[f"{KEY}:remittance~adj1"]
    assert reversal.status == adjustment.status == JournalStatus.POSTED
    for journal in (reversal.journal, adjustment.journal):
        assert sum(line.debit for line in journal.lines) == sum(
            line.credit for line in journal.lines
        )
        assert journal.rule_version == "2025.2"
    assert net_per_account([reversal.journal]) == {
        account: -net for account, net in net_per_account([original]).items()
    }
    assert net_per_account([original, reversal.journal, adjustment.journal]) == net_per_account(
        [adjustment.journal]
    )


def test_apply_is_audited_and_its_events_say_what_they_reverse(
    app: bootstrap.App, approvals: Approvals
) -> None:
    post(app, WORKED_EXAMPLE)
    rules = rules_file(app, "2025.2", L6_TO_6890)
    app.replayer().apply(dry_run(app, rules), "alice", approvals)
    with app.store.unit_of_work() as uow:
        [entry] = uow.audit.for_subject("replay", f"{MAPPING_VERSION}@2025.2")
        prepared = [
            s.event.data["replay"]
            for s in uow.events.by_key(PAYMENT)
            if s.event.type == EventType.JOURNAL_PREPARED and "replay" in s.event.data
        ]
    assert (entry.actor, entry.action) == ("alice", "replay.applied")
    assert entry.detail["payments"] == [PAYMENT]
    assert (entry.detail["reversals"], entry.detail["adjustments"]) == (1, 1)
    assert entry.detail["rules_sha256"] == load_rule_set(rules).sha256
    assert [(p["role"], p["step"], p.get("reverses")) for p in prepared] == [
        ("reversal", 1, f"{KEY}:remittance"),
        ("adjustment", 1, None),
    ]


def test_applying_the_same_replay_again_creates_nothing(
    app: bootstrap.App, approvals: Approvals
) -> None:
    post(app, WORKED_EXAMPLE)
    rules = rules_file(app, "2025.2", L6_TO_6890)
    stale = dry_run(app, rules)
    app.replayer().apply(stale, "alice", approvals)
    app.worker().run_until_idle(max_wait_seconds=0)
    before = journals(app)
    assert dry_run(app, rules).payments == ()
    again = app.replayer().apply(stale, "alice", approvals)  # an out-of-date dry run
    assert again.applied is not None and again.applied.journals == ()
    app.worker().run_until_idle(max_wait_seconds=0)
    assert journals(app) == before


def test_replaying_back_reverses_the_adjustment_in_effect(
    app: bootstrap.App, approvals: Approvals
) -> None:
    post(app, WORKED_EXAMPLE)
    first = {k: r.journal for k, r in journals(app).items()}
    app.replayer().apply(dry_run(app, rules_file(app, "2025.2", L6_TO_6890)), "alice", approvals)
    back = app.replayer().apply(dry_run(app, configured_rules(app)), "alice", approvals)
    assert back.applied is not None
    assert back.applied.journals == (f"{KEY}:remittance~rev2", f"{KEY}:remittance~adj2")
    app.worker().run_until_idle(max_wait_seconds=0)
    records = journals(app)
    assert records[f"{KEY}:remittance~rev2"].journal.description.startswith(
        f"reversal of {KEY}:remittance~adj1"
    )
    assert net_per_account(r.journal for r in records.values()) == net_per_account(first.values())
    assert dry_run(app, configured_rules(app)).payments == ()


def test_a_journal_the_target_refused_blocks_its_payment(
    app: bootstrap.App, approvals: Approvals
) -> None:
    post(app, WORKED_EXAMPLE)
    with app.store.unit_of_work() as uow:
        uow.journals.mark_failed(f"{KEY}:remittance", "period closed")
    result = dry_run(app, rules_file(app, "2025.2", L6_TO_6890))
    [payment] = result.payments
    assert payment.blocked is not None and "refused" in payment.blocked
    assert app.replayer().apply(result, "alice", approvals) == Outcome()


def test_journals_never_prepared_take_their_original_keys(
    app: bootstrap.App, approvals: Approvals
) -> None:
    """Replaying before the journal job ran: the job finds the keys taken, adds nothing."""
    from revbridge.ingest.x12_files import ingest_file

    ingest_file(app.store, WORKED_EXAMPLE)
    assert app.worker().run_once()  # normalise only
    [payment] = dry_run(app, configured_rules(app)).payments
    assert {j.change for j in payment.journals} == {JournalChange.NEW}
    outcome = app.replayer().apply(dry_run(app, configured_rules(app)), "alice", approvals)
    assert outcome.applied is not None
    assert sorted(outcome.applied.journals) == [
        f"{KEY}:correction",
        f"{KEY}:remittance",
        f"{KEY}:reversal",
    ]
    app.worker().run_until_idle(max_wait_seconds=0)
    assert sorted(journals(app)) == sorted(outcome.applied.journals)


# ------------------------------------------------------------------ mapping versions


def _without_the_reversal(unit: UnitInput, at: datetime) -> Normalised | Rejected:
    """A test mapping version that no longer emits the CLP02 22 claim (and its CAS), and
    counts one claim less in the header."""
    result = normalise_835(unit, at)
    assert isinstance(result, Normalised)
    header, *rest = result.events
    data = {**header.data, "claim_count": header.data["claim_count"] - 1}
    kept = [
        e for e in rest if e.type != EventType.CLAIM_REVERSED and e.data.get("claim_status") != "22"
    ]
    return dataclasses.replace(result, events=[dataclasses.replace(header, data=data), *kept])


def test_the_flat_mapping_gives_an_event_per_adjustment_and_the_same_journals(
    app: bootstrap.App,
) -> None:
    """Mapping x12_835/1 (an adjustment.booked event per CAS triplet) and x12_835/2 (a
    claim's adjustments inside its event) differ in events only: the journals are equal."""
    post(app, WORKED_EXAMPLE)
    replayer = app.replayer()
    versions = Versions(FLAT_MAPPING_VERSION, load_rule_set(configured_rules(app)))
    result = replayer.dry_run(replayer.select(Selection(everything=True)), versions)
    [payment] = result.payments
    added = [e.type for e in payment.events if e.change is EventChange.ADDED]
    assert added and set(added) == {EventType.ADJUSTMENT_BOOKED}
    assert {j.change for j in payment.journals} == {JournalChange.UNCHANGED}
    assert payment.to_post == ()


def test_a_mapping_that_drops_events_shows_them_and_reverses_the_gone_journal(
    app: bootstrap.App, approvals: Approvals, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(replay.MAPPINGS, "x12_835/test", _without_the_reversal)
    post(app, WORKED_EXAMPLE)
    replayer = app.replayer()
    versions = Versions("x12_835/test", load_rule_set(configured_rules(app)))
    result = replayer.dry_run(replayer.select(Selection(everything=True)), versions)
    [payment] = result.payments
    removed = [(e.change, e.type) for e in payment.events if e.change is EventChange.REMOVED]
    assert removed == [(EventChange.REMOVED, EventType.CLAIM_REVERSED)]  # its CAS inside
    [changed] = [e for e in payment.events if e.change is EventChange.CHANGED]
    assert (changed.type, dict(changed.fields)) == (
        EventType.REMITTANCE_RECEIVED,
        {"data.claim_count": (4, 3)},
    )
    assert [(j.key, j.change) for j in payment.to_post] == [(f"{KEY}:reversal", JournalChange.GONE)]
    outcome = replayer.apply(result, "alice", approvals)
    assert outcome.applied is not None
    assert outcome.applied.journals == (f"{KEY}:reversal~rev1",)


# --------------------------------------------------------------------------- bulk


def test_bulk_replay_waits_for_a_second_person(
    app: bootstrap.App, approvals: Approvals, tmp_path: Path
) -> None:
    post(app, WORKED_EXAMPLE, second_payment(tmp_path))
    before = journals(app)
    result = dry_run(app, rules_file(app, "2025.2", L6_TO_6890))
    assert result.bulk
    outcome = app.replayer().apply(result, "alice", approvals)
    assert outcome.applied is None and outcome.approval is not None
    assert outcome.approval.kind == "bulk_replay"
    assert journals(app) == before
    with pytest.raises(ActionRefused, match="second person"):
        approvals.approve(outcome.approval.id, "alice")
    done = approvals.approve(outcome.approval.id, "bob")
    assert sorted(done["payments"]) == [PAYMENT, OTHER_PAYMENT]
    assert len(done["journals"]) == 4
    app.worker().run_until_idle(max_wait_seconds=0)
    records = journals(app)
    assert len(records) == len(before) + 4
    assert {r.status for r in records.values()} == {JournalStatus.POSTED}
    with app.store.unit_of_work() as uow:
        [entry] = uow.audit.for_subject("replay", f"{MAPPING_VERSION}@2025.2")
    assert (entry.actor, entry.detail["requested_by"]) == ("bob", "alice")


def test_an_approval_is_refused_when_the_rules_file_changed(
    app: bootstrap.App, approvals: Approvals, tmp_path: Path
) -> None:
    post(app, WORKED_EXAMPLE, second_payment(tmp_path))
    rules = rules_file(app, "2025.2", L6_TO_6890)
    outcome = app.replayer().apply(dry_run(app, rules), "alice", approvals)
    assert outcome.approval is not None
    rules.write_text(rules.read_text().replace("6890", "6891"))
    with pytest.raises(ActionRefused, match="changed since"):
        approvals.approve(outcome.approval.id, "bob")
    with app.store.unit_of_work() as uow:
        assert uow.approvals.get(outcome.approval.id).status == ApprovalStatus.PENDING
    assert len(journals(app)) == 6


# ---------------------------------------------------------------------- selection


def test_selection_by_raw_payment_trn_and_time(app: bootstrap.App, tmp_path: Path) -> None:
    post(app, WORKED_EXAMPLE, second_payment(tmp_path))
    replayer = app.replayer()
    with app.store.unit_of_work() as uow:
        second = uow.raw.get(2)
        first_unit, second_unit = uow.units.by_raw(1)[0].id, uow.units.by_raw(2)[0].id
    assert replayer.select(Selection(raw_ids=(2,))).unit_ids == (second_unit,)
    assert replayer.select(Selection(payment=PAYMENT)).unit_ids == (first_unit,)
    assert replayer.select(Selection(payment="EFT20250107B")).unit_ids == (second_unit,)
    later = second.received_at + timedelta(seconds=1)
    assert replayer.select(Selection(since=later)).unit_ids == ()
    assert second_unit in replayer.select(Selection(since=second.received_at)).unit_ids
    assert replayer.select(Selection(payment=PAYMENT, raw_ids=(2,))).unit_ids == ()
    assert replayer.select(Selection(everything=True)).unit_ids == (first_unit, second_unit)


def test_units_that_were_not_normalised_are_skipped_with_the_reason(
    app: bootstrap.App, tmp_path: Path
) -> None:
    resend = tmp_path / "resend.835"
    resend.write_bytes(WORKED_EXAMPLE.read_bytes().replace(b"000004711", b"000004712"))
    post(app, WORKED_EXAMPLE, resend)
    selected = app.replayer().select(Selection(everything=True))
    assert len(selected.unit_ids) == 1
    [skipped] = selected.skipped
    assert skipped.raw_id == 2 and skipped.reason.startswith(f"unit is {UnitStatus.DUPLICATE}")


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (Selection(), "say what to replay"),
        (Selection(everything=True, raw_ids=(1,)), "no other criterion"),
        (Selection(since=datetime(2025, 1, 1)), "no time zone"),
        (
            Selection(
                since=datetime(2025, 2, 1, tzinfo=UTC), until=datetime(2025, 1, 1, tzinfo=UTC)
            ),
            "empty",
        ),
        (Selection(raw_ids=(99,)), "no raw message 99"),
        (Selection(payment="NOPE"), "no payment or TRN"),
    ],
)
def test_unclear_selections_are_refused(
    app: bootstrap.App, selection: Selection, message: str
) -> None:
    post(app, WORKED_EXAMPLE)
    with pytest.raises(ActionRefused, match=message):
        app.replayer().select(selection)


def test_an_unknown_mapping_version_is_refused(app: bootstrap.App) -> None:
    with pytest.raises(ActionRefused, match="x12_835/1"):
        Versions("x12_835/9", load_rule_set(configured_rules(app)))
