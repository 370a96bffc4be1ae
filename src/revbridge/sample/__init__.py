"""The sample deployment written by ``revbridge init`` (and used by the demo)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DATA_FILES = ("master-data.yaml", "posting-rules.yaml")


def sample_config(
    *,
    store_path: str = "revbridge.db",
    target: str = "gl",
    erp_url: str = "${REVBRIDGE_ERP_URL:-http://127.0.0.1:8000/}",
    erp_database: str = "${REVBRIDGE_ERP_DATABASE:-revbridge}",
) -> str:
    return f"""# revbridge deployment (reference: docs/configuration.md)
store:
  type: sqlite
  path: {store_path}

inputs:
  - type: x12_files
    name: remittances
    path: inbox

normalisers:
  - type: x12_835

ledger:
  master_data: master-data.yaml
  posting_rules: posting-rules.yaml
  target: {target}   # the output that books journals: gl (CSV files) or erp (Tryton)

outputs:
  - type: gl_file
    name: gl
    path: gl-out
  - type: erp_tryton
    name: erp
    url: {erp_url}
    database: {erp_database}
    user: admin
    password: ${{REVBRIDGE_ERP_PASSWORD:-admin}}
  - type: parquet_export   # `revbridge export`: reporting reads these, not the store
    name: analytics
    path: analytics
"""


def write_sample(folder: Path, config_name: str = "revbridge.yaml", **options: str) -> Path:
    """Write the config (unless present), master data and posting rules into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / config_name
    if not config.exists():
        config.write_text(sample_config(**options), encoding="utf-8")
    for name in DATA_FILES:
        if not (folder / name).exists():
            text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
            (folder / name).write_text(text, encoding="utf-8")
    (folder / "inbox").mkdir(exist_ok=True)
    return config
