"""Config loading: validation against the component specs, with the line of each problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from revbridge import bootstrap
from revbridge.config import load_config
from revbridge.errors import ConfigurationError
from revbridge.registry import Secret
from revbridge.sample import sample_config, write_sample


def test_sample_config_is_valid(deployment: Path) -> None:
    config = load_config(deployment, bootstrap.SPECS)
    assert config.ledger["target"] == "gl"
    assert [o.name for o in config.outputs] == ["gl", "erp", "analytics"]
    assert Path(config.store.options["path"]).is_absolute()


def test_problems_name_their_line(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    text = path.read_text().replace("    path: gl-out\n", "    path: gl-out\n    colour: blue\n")
    text = text.replace("type: x12_files", "type: x12_filez")
    path.write_text(text)
    with pytest.raises(ConfigurationError) as caught:
        load_config(path, bootstrap.SPECS)
    message = str(caught.value)
    lines = text.splitlines()
    colour_line = next(n for n, line in enumerate(lines, 1) if "colour" in line)
    type_line = next(n for n, line in enumerate(lines, 1) if "x12_filez" in line)
    assert f"revbridge.yaml:{colour_line}: outputs[0].colour: unknown field" in message
    assert f"revbridge.yaml:{type_line}: inputs[0].type: unknown inputs type 'x12_filez'" in message


def test_missing_required_field_and_wrong_type(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    path.write_text(
        path.read_text()
        .replace("  target: gl", "  target: 7")
        .replace("  master_data: master-data.yaml\n", "")
    )
    with pytest.raises(ConfigurationError) as caught:
        load_config(path, bootstrap.SPECS)
    assert "ledger.master_data: required field is missing" in str(caught.value)
    assert "ledger.target: expected string, got int" in str(caught.value)


def test_environment_interpolation_and_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVBRIDGE_ERP_PASSWORD", "s3cret")
    config = load_config(write_sample(tmp_path), bootstrap.SPECS)
    password = config.output("erp").options["password"]
    assert isinstance(password, Secret)
    assert password.reveal() == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in str(password)


def test_unset_variable_without_default_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "revbridge.yaml"
    path.write_text(sample_config().replace("${REVBRIDGE_ERP_PASSWORD:-admin}", "${RB_UNSET_VAR}"))
    write_sample(tmp_path)
    with pytest.raises(ConfigurationError, match="RB_UNSET_VAR is not set"):
        load_config(path, bootstrap.SPECS)


def test_target_must_name_an_output(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    path.write_text(path.read_text().replace("  target: gl", "  target: sap"))
    with pytest.raises(ConfigurationError, match=r"ledger\.target: no output named 'sap'"):
        load_config(path, bootstrap.SPECS)
