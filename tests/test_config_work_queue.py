"""The ``exceptions`` and ``api`` config sections: defaults, validation with lines."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from revbridge import bootstrap
from revbridge.config import load_config
from revbridge.errors import ConfigurationError
from revbridge.registry import Secret
from revbridge.sample import write_sample


def test_defaults(deployment: Path) -> None:
    config = load_config(deployment, bootstrap.SPECS)
    assert config.exceptions == {
        "default_sla_hours": 48.0,
        "sla_hours": {},
        "write_off_approval_above": Decimal("1000.00"),
    }
    assert config.api == {"users": []}


def test_values_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_TOKEN", "t" * 20)
    path = write_sample(tmp_path)
    path.write_text(
        path.read_text()
        + "exceptions:\n  default_sla_hours: 24\n  sla_hours: {erp_rejected: 4}\n"
        + '  write_off_approval_above: "250.00"\n'
        + 'api:\n  users:\n    - {name: ana, token: "${RB_TOKEN}"}\n'
    )
    config = load_config(path, bootstrap.SPECS)
    assert config.exceptions["sla_hours"] == {"erp_rejected": 4.0}
    assert config.exceptions["write_off_approval_above"] == Decimal("250.00")
    (user,) = config.api["users"]
    assert user["name"] == "ana" and isinstance(user["token"], Secret)
    assert user["token"].reveal() == "t" * 20 and "t" * 20 not in repr(config)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("exceptions:\n  sla_hours: {claim_denyed: 4}\n", "sla_hours.claim_denyed: unknown reason"),
        ("exceptions:\n  sla_hours: {claim_denied: 0}\n", "claim_denied: expected a number"),
        ("exceptions:\n  default_sla_hours: 0\n", "default_sla_hours: must be more than 0"),
        ("exceptions:\n  write_off_approval_above: 1000.5\n", "expected string, got float"),
        ('exceptions:\n  write_off_approval_above: "ten"\n', "expected an amount"),
        ('exceptions:\n  write_off_approval_above: "1.001"\n', "expected an amount"),
        ("api:\n  users:\n    - {name: ana}\n", "api.users[0].token: required field"),
        ("api:\n  users: ana\n", "api.users: expected list"),
        ("api:\n  colour: blue\n", "api.colour: unknown field"),
    ],
)
def test_problems_name_their_line(tmp_path: Path, section: str, message: str) -> None:
    path = write_sample(tmp_path)
    path.write_text(path.read_text() + section)
    with pytest.raises(ConfigurationError) as caught:
        load_config(path, bootstrap.SPECS)
    assert message in str(caught.value)
    assert "revbridge.yaml:" in str(caught.value)


def test_a_user_listed_twice_is_refused(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    path.write_text(
        path.read_text()
        + "api:\n  users:\n    - {name: ana, token: aaaaaaaaaaaaaaaaaaaa}\n"
        + "    - {name: ana, token: bbbbbbbbbbbbbbbbbbbb}\n"
    )
    with pytest.raises(ConfigurationError, match="listed twice"):
        load_config(path, bootstrap.SPECS)
