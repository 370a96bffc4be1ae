"""Component specs: every configurable part declares its fields once.

``revbridge check-config``, the JSON Schema of the config file and the configuration
reference in ``docs/`` are all generated from these declarations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

REQUIRED: Any = object()
SINGLE_SECTIONS = ("ledger", "worker", "exceptions", "api", "retention")  # no ``type``

_JSON_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "path": "string",
    "secret": "string",
    "mapping": "object",
    "list": "array",
}


class Secret:
    """A value that never prints itself (passwords, tokens)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: str  # string | integer | number | boolean | path | secret | mapping | list
    description: str
    default: Any = REQUIRED
    example: Any = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    section: str  # store | inputs | normalisers | outputs | ledger | worker | exceptions | api
    type: str
    summary: str
    fields: tuple[Field, ...]

    def validate(self, options: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Options with defaults filled in, and (field, problem) pairs."""
        known = {f.name for f in self.fields}
        problems = [
            (k, f"unknown field (expected one of {sorted(known)})")
            for k in options
            if k not in known
        ]
        values: dict[str, Any] = {}
        for spec_field in self.fields:
            value, problem = _value(spec_field, options)
            if problem:
                problems.append((spec_field.name, problem))
            else:
                values[spec_field.name] = value
        return values, problems

    def json_schema(self) -> dict[str, Any]:
        props: dict[str, Any] = (
            {"type": {"const": self.type}} if self.section not in SINGLE_SECTIONS else {}
        )
        if self.section in ("inputs", "outputs", "normalisers"):
            props["name"] = {"type": "string", "description": "Name of this instance."}
        for f in self.fields:
            prop: dict[str, Any] = {"type": _JSON_TYPES[f.type], "description": f.description}
            if not f.required and f.default is not None:
                prop["default"] = f.default
            props[f.name] = prop
        required = [f.name for f in self.fields if f.required]
        return {
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": False,
        }


def _value(spec_field: Field, options: Mapping[str, Any]) -> tuple[Any, str | None]:
    if spec_field.name not in options:
        if spec_field.required:
            return None, "required field is missing"
        return spec_field.default, None
    return _coerce(spec_field, options[spec_field.name])


def _coerce(spec_field: Field, value: Any) -> tuple[Any, str | None]:
    kind = spec_field.type
    checks: dict[str, tuple[type, ...]] = {
        "string": (str,),
        "path": (str,),
        "secret": (str,),
        "integer": (int,),
        "number": (int, float),
        "boolean": (bool,),
        "mapping": (dict,),
        "list": (list,),
    }
    if isinstance(value, bool) and kind in ("integer", "number"):
        return None, f"expected {kind}, got a boolean"
    if not isinstance(value, checks[kind]):
        return None, f"expected {kind}, got {type(value).__name__}"
    return (Secret(str(value)) if kind == "secret" else value), None


def reference_markdown(specs: Iterable[ComponentSpec]) -> str:
    """The configuration reference page (docs/configuration.md), generated."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the component specs by `revbridge docs`; do not edit by hand.",
        "",
        "One YAML file describes a deployment. `${VAR}` and `${VAR:-default}` are replaced",
        "from the environment; fields of type `secret` never print their value.",
        "",
    ]
    for spec in specs:
        out += [
            f"## `{spec.section}` · `{spec.type}`",
            "",
            spec.summary,
            "",
            "| field | type | required | default | description | example |",
            "|---|---|---|---|---|---|",
        ]
        for f in spec.fields:
            default = "" if f.required or f.default is None else f"`{f.default}`"
            example = "" if f.example is None else f"`{f.example}`"
            out.append(
                f"| `{f.name}` | {f.type} | {'yes' if f.required else 'no'} | {default} "
                f"| {f.description} | {example} |"
            )
        out.append("")
    return "\n".join(out)
