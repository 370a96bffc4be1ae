"""What the replay tests share: posted remittances and other versions of the rule set."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

from revbridge import bootstrap
from revbridge.domain.journal import Journal
from revbridge.ingest.x12_files import ingest_file
from revbridge.normalise.x12_835 import MAPPING_VERSION
from revbridge.orchestrate.replay import ReplayResult, Selection, Versions, load_rule_set
from revbridge.store.base import JournalRecord
from tests.conftest import WORKED_EXAMPLE

PAYMENT = "1999999999:EFT20250106A"
OTHER_PAYMENT = "1999999999:EFT20250107B"
KEY = "835:1999999999:EFT20250106A:RHS"
L6_TO_6890 = ('L6: {account: "6810"}', 'L6: {account: "6890"}')
CO45_TO_5150 = (
    "  - {group: CO, action: contractual}",
    '  - {group: CO, reasons: ["45"], action: account, account: "5150"}\n'
    "  - {group: CO, action: contractual}",
)


def rules_file(app: bootstrap.App, version: str, *changes: tuple[str, str]) -> Path:
    """The deployment's rule set under another version, with text replacements."""
    configured = Path(app.config.ledger["posting_rules"])
    text = configured.read_text(encoding="utf-8").replace('"2025.1"', f'"{version}"')
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    path = configured.with_name(f"posting-rules-{version}.yaml")
    path.write_text(text, encoding="utf-8")
    return path


def configured_rules(app: bootstrap.App) -> Path:
    return Path(app.config.ledger["posting_rules"])


def post(app: bootstrap.App, *paths: Path) -> None:
    for path in paths:
        ingest_file(app.store, path)
    app.worker().run_until_idle(max_wait_seconds=0)


def second_payment(folder: Path) -> Path:
    """The worked example as another payment (TRN and control numbers changed)."""
    path = folder / "second.835"
    data = WORKED_EXAMPLE.read_bytes().replace(b"EFT20250106A", b"EFT20250107B")
    path.write_bytes(data.replace(b"4711", b"4712"))
    return path


def dry_run(app: bootstrap.App, rules: Path, selection: Selection | None = None) -> ReplayResult:
    replayer = app.replayer()
    selected = replayer.select(selection or Selection(everything=True))
    return replayer.dry_run(selected, Versions(MAPPING_VERSION, load_rule_set(rules)))


def journals(app: bootstrap.App) -> dict[str, JournalRecord]:
    with app.store.unit_of_work() as uow:
        return {r.journal.key: r for r in uow.journals.all()}


def net_per_account(journals: Iterable[Journal]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for journal in journals:
        for line in journal.lines:
            totals[line.account] += line.net
    return {account: net for account, net in totals.items() if net}
