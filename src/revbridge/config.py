"""Load and validate the one YAML file that describes a deployment.

Every problem is reported with its line (``revbridge.yaml:12: outputs[0].url: ...``).
Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from revbridge.errors import ConfigurationError
from revbridge.registry import SINGLE_SECTIONS, ComponentSpec, Field

ENV_VAR = "REVBRIDGE_CONFIG"
DEFAULT_NAME = "revbridge.yaml"
LIST_SECTIONS = ("inputs", "normalisers", "outputs")

LEDGER_SPEC = ComponentSpec(
    "ledger",
    "ledger",
    "Master data, posting rules, and which output receives journals.",
    (
        Field(
            "master_data",
            "path",
            "Master data YAML (entities, facilities, payers, classes, accounts).",
            example="master-data.yaml",
        ),
        Field("posting_rules", "path", "Versioned posting-rule set.", example="posting-rules.yaml"),
        Field("target", "string", "Name of the output that books journals.", example="erp"),
    ),
)
WORKER_SPEC = ComponentSpec(
    "worker",
    "worker",
    "How workers lease and run jobs.",
    (
        Field(
            "lease_seconds",
            "number",
            "Lease length; an expired lease lets another worker take the job.",
            60.0,
        ),
        Field(
            "poll_seconds",
            "number",
            "Longest an idle worker waits before it looks at the queue again. New work wakes"
            " it at once (the store's wake-ups), so this is a safety net, not a polling"
            " interval.",
            1.0,
        ),
        Field("post_batch_size", "integer", "Journals per call to an output.", 50),
        Field("max_attempts", "integer", "Attempts before a failing job is parked.", 8),
    ),
)
EXCEPTION_REASONS = (
    "rejected_file",
    "envelope_error",
    "rejected_transaction",
    "control_number_reused",
    "payment_conflict",
    "payer_data_warning",
    "unknown_payer",
    "unknown_payee",
    "unmapped_code",
    "claim_denied",
    "erp_rejected",
    "retries_exhausted",
    "business_rejection",
    "processing_error",
)
EXCEPTIONS_SPEC = ComponentSpec(
    "exceptions",
    "exceptions",
    "The exception work queue: how long people have to work an item (SLA, per reason) and "
    "which write-offs need a second person's approval.",
    (
        Field(
            "default_sla_hours",
            "number",
            "Hours to work an item whose reason has no entry in sla_hours.",
            48.0,
        ),
        Field(
            "sla_hours",
            "mapping",
            "Hours to work an item, per reason (" + ", ".join(EXCEPTION_REASONS) + ").",
            {},
            example="{erp_rejected: 4, claim_denied: 720}",
        ),
        Field(
            "write_off_approval_above",
            "string",
            "A write-off of more than this amount needs a second person's approval "
            "(quoted: money is never a float).",
            "1000.00",
        ),
    ),
)
API_SPEC = ComponentSpec(
    "api",
    "api",
    "The HTTP API (`/v1/...`): the people who may call it, each with a bearer token.",
    (
        Field(
            "users",
            "list",
            "One entry per person: `name` (recorded in the audit log) and `token` (a secret, "
            "at least 16 characters; use `${ENV}`).",
            [],
            example='[{name: ana, token: "${REVBRIDGE_TOKEN_ANA}"}]',
        ),
    ),
)
API_USER_SPEC = ComponentSpec(
    "api",
    "users[]",
    "One person who may call the HTTP API.",
    (
        Field("name", "string", "User name, recorded with every action.", example="ana"),
        Field("token", "secret", "Bearer token.", example="${REVBRIDGE_TOKEN_ANA}"),
    ),
)
RETENTION_KEEP_MONTHS = 84
RETENTION_SPEC = ComponentSpec(
    "retention",
    "retention",
    "How long raw messages and events are kept, in whole months; older months are dropped "
    "whole by `revbridge retention` (run by `serve`; from cron for `worker` deployments). "
    "Without this section nothing is dropped.",
    (
        Field(
            "keep_raw_months",
            "integer",
            "Months of raw messages (with their bytes) kept before the current one.",
            RETENTION_KEEP_MONTHS,
        ),
        Field(
            "keep_event_months",
            "integer",
            "Months of canonical events kept before the current one.",
            RETENTION_KEEP_MONTHS,
        ),
        Field(
            "minimum_months",
            "integer",
            "The audit-trail floor: keep_raw_months and keep_event_months below it are "
            "refused (journals' source references lead back to those rows).",
            RETENTION_KEEP_MONTHS,
        ),
        Field(
            "allow_below_minimum",
            "boolean",
            "Accept keep months below minimum_months (a shorter audit trail).",
            False,
        ),
        Field(
            "archive",
            "string",
            "A parquet_export output: a month of events is dropped only once that export "
            "holds all of it (raw bytes are not exported).",
            None,
            example="analytics",
        ),
        Field(
            "run_every_hours",
            "number",
            "How often `serve` runs the whole job (it takes up a new month within the hour).",
            24.0,
        ),
    ),
)
MIN_TOKEN_LENGTH = 16
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class ComponentConfig:
    section: str
    type: str
    name: str
    options: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    store: ComponentConfig
    inputs: tuple[ComponentConfig, ...]
    normalisers: tuple[ComponentConfig, ...]
    outputs: tuple[ComponentConfig, ...]
    ledger: Mapping[str, Any]
    worker: Mapping[str, Any]
    exceptions: Mapping[str, Any] = field(default_factory=dict)
    api: Mapping[str, Any] = field(default_factory=dict)
    retention: Mapping[str, Any] | None = None  # None: no retention section, nothing dropped

    def output(self, name: str) -> ComponentConfig:
        return next(o for o in self.outputs if o.name == name)


def find_config(explicit: str | None) -> Path:
    """``--config`` wins, then ``$REVBRIDGE_CONFIG``, then ``./revbridge.yaml``."""
    return Path(explicit or os.environ.get(ENV_VAR) or DEFAULT_NAME)


def load_config(path: Path, specs: Mapping[tuple[str, str], ComponentSpec]) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read config: {exc.strerror}", location=str(path)) from exc
    data, lines = _load_with_lines(path, text)
    reader = _Reader(path, lines, specs)
    config = reader.config(data)
    if reader.problems:
        raise ConfigurationError("invalid configuration:\n  " + "\n  ".join(reader.problems))
    return config


def _load_with_lines(path: Path, text: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"not valid YAML: {exc}", location=str(path)) from exc
    lines: dict[tuple[Any, ...], int] = {}
    return (_plain(node, (), lines) if node is not None else {}), lines


def _plain(node: yaml.Node, where: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> Any:
    lines[where] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        return {k.value: _plain(v, (*where, k.value), lines) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v, (*where, i), lines) for i, v in enumerate(node.value)]
    return yaml.SafeLoader(" ").construct_object(node)


class _Reader:
    def __init__(
        self,
        path: Path,
        lines: dict[tuple[Any, ...], int],
        specs: Mapping[tuple[str, str], ComponentSpec],
    ) -> None:
        self.path, self.lines, self.specs = path, lines, specs
        self.problems: list[str] = []

    def problem(self, where: tuple[Any, ...], message: str) -> None:
        line = next(
            (self.lines[where[:n]] for n in range(len(where), -1, -1) if where[:n] in self.lines), 1
        )
        dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where).lstrip(".")
        self.problems.append(f"{self.path}:{line}: {dotted or '(top)'}: {message}")

    def config(self, data: Any) -> Config:
        if not isinstance(data, dict):
            self.problem((), "the file must be a mapping of sections")
            data = {}
        for key in data:
            if key not in ("store", *SINGLE_SECTIONS, *LIST_SECTIONS):
                self.problem((key,), "unknown section")
        store = self.component(("store",), data.get("store"), "store")
        lists = {s: tuple(self.components(s, data.get(s) or [])) for s in LIST_SECTIONS}
        ledger = self.fixed(("ledger",), data.get("ledger"), LEDGER_SPEC)
        worker = self.fixed(("worker",), data.get("worker") or {}, WORKER_SPEC)
        self.check_target(ledger, lists["outputs"])
        return Config(
            self.path,
            store,
            lists["inputs"],
            lists["normalisers"],
            lists["outputs"],
            ledger,
            worker,
            self.exceptions(data.get("exceptions") or {}),
            self.api(data.get("api") or {}),
            self.retention(data["retention"] or {}, lists["outputs"])
            if "retention" in data
            else None,
        )

    def exceptions(self, options: Any) -> dict[str, Any]:
        where = ("exceptions",)
        values = self.fixed(where, options, EXCEPTIONS_SPEC)
        if values.get("default_sla_hours", 1) <= 0:
            self.problem((*where, "default_sla_hours"), "must be more than 0")
        values["sla_hours"] = self.sla_hours((*where, "sla_hours"), values.get("sla_hours", {}))
        limit = values.get("write_off_approval_above")
        if isinstance(limit, str):
            values["write_off_approval_above"] = self.amount(
                (*where, "write_off_approval_above"), limit
            )
        return values

    def sla_hours(self, where: tuple[Any, ...], hours: Mapping[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for reason, value in hours.items():
            if reason not in EXCEPTION_REASONS:
                self.problem((*where, reason), f"unknown reason (known: {list(EXCEPTION_REASONS)})")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                self.problem((*where, reason), f"expected a number of hours above 0, got {value!r}")
            else:
                out[reason] = float(value)
        return out

    def amount(self, where: tuple[Any, ...], text: str) -> Decimal:
        try:
            value = Decimal(text)
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.01")):
            self.problem(where, f"expected an amount like '1000.00', got {text!r}")
            return Decimal("0.00")
        return value

    def retention(self, options: Any, outputs: tuple[ComponentConfig, ...]) -> dict[str, Any]:
        where = ("retention",)
        values = self.fixed(where, options, RETENTION_SPEC)
        for name, message in retention_problems(values):
            self.problem((*where, name), message)
        archive = values.get("archive")
        exports = [o.name for o in outputs if o.type == "parquet_export"]
        if archive is not None and archive not in exports:
            self.problem((*where, "archive"), f"no parquet_export output named {archive!r}")
        if values.get("run_every_hours", 1) <= 0:
            self.problem((*where, "run_every_hours"), "must be more than 0")
        return values

    def api(self, options: Any) -> dict[str, Any]:
        values = self.fixed(("api",), options, API_SPEC)
        users: list[dict[str, Any]] = []
        for number, entry in enumerate(values.get("users", [])):
            user = self.fixed(("api", "users", number), entry, API_USER_SPEC)
            if "name" in user and "token" in user:
                self.check_user(("api", "users", number), user, users)
                users.append(user)
        values["users"] = users
        return values

    def check_user(
        self, where: tuple[Any, ...], user: Mapping[str, Any], others: list[dict[str, Any]]
    ) -> None:
        if len(user["token"].reveal()) < MIN_TOKEN_LENGTH:
            self.problem((*where, "token"), f"must be at least {MIN_TOKEN_LENGTH} characters")
        if any(o["name"] == user["name"] for o in others):
            self.problem((*where, "name"), f"user {user['name']!r} is listed twice")
        if any(o["token"].reveal() == user["token"].reveal() for o in others):
            self.problem((*where, "token"), "two users share this token")

    def components(self, section: str, items: Any) -> list[ComponentConfig]:
        if not isinstance(items, list):
            self.problem((section,), "must be a list")
            return []
        return [self.component((section, i), item, section) for i, item in enumerate(items)]

    def component(self, where: tuple[Any, ...], item: Any, section: str) -> ComponentConfig:
        if not isinstance(item, dict) or "type" not in item:
            self.problem(where, "must be a mapping with a 'type'")
            return ComponentConfig(section, "?", "?", {})
        options = {k: v for k, v in item.items() if k not in ("type", "name")}
        spec = self.specs.get((section, item["type"]))
        if spec is None:
            known = sorted(t for s, t in self.specs if s == section)
            self.problem(
                (*where, "type"), f"unknown {section} type {item['type']!r}; known: {known}"
            )
            return ComponentConfig(section, item["type"], item["type"], options)
        values = self.fixed(where, options, spec)
        return ComponentConfig(section, item["type"], str(item.get("name", item["type"])), values)

    def fixed(self, where: tuple[Any, ...], options: Any, spec: ComponentSpec) -> dict[str, Any]:
        if not isinstance(options, dict):
            self.problem(where, "must be a mapping")
            return {}
        values, problems = spec.validate(self.interpolate(where, options))
        for name, message in problems:
            self.problem((*where, name), message)
        for f in spec.fields:
            if f.type == "path" and isinstance(values.get(f.name), str):
                values[f.name] = (self.path.parent / values[f.name]).resolve()
        return values

    def interpolate(self, where: tuple[Any, ...], options: dict[str, Any]) -> dict[str, Any]:
        return {
            k: self.expand((*where, k), v) if isinstance(v, str) else v for k, v in options.items()
        }

    def expand(self, where: tuple[Any, ...], text: str) -> str:
        def repl(match: re.Match[str]) -> str:
            value = os.environ.get(match.group(1), match.group(2))
            if value is None:
                self.problem(where, f"environment variable {match.group(1)} is not set")
                return ""
            return value

        return _ENV.sub(repl, text)

    def check_target(self, ledger: Mapping[str, Any], outputs: tuple[ComponentConfig, ...]) -> None:
        target = ledger.get("target")
        if target is not None and target not in {o.name for o in outputs}:
            self.problem(("ledger", "target"), f"no output named {target!r}")


def retention_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, problem) pairs of retention settings: keep months of at least one, and not
    below the audit-trail floor unless ``allow_below_minimum``."""
    problems: list[tuple[str, str]] = []
    minimum = values.get("minimum_months", RETENTION_KEEP_MONTHS)
    if minimum < 1:
        problems.append(("minimum_months", "must be at least 1"))
    for name in ("keep_raw_months", "keep_event_months"):
        keep = values.get(name, RETENTION_KEEP_MONTHS)
        if keep < 1:
            problems.append((name, "must be at least 1 (the current month is always kept)"))
        elif keep < minimum and not values.get("allow_below_minimum", False):
            problems.append(
                (
                    name,
                    f"{keep} months is below minimum_months ({minimum}): raw messages and"
                    " events are the audit trail of the journals posted from them; keep them"
                    " longer, or set allow_below_minimum: true to accept a shorter trail",
                )
            )
    return problems
