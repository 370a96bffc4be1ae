"""``revbridge export``: append what is new to the configured Parquet exports."""

from __future__ import annotations

import click

from revbridge import bootstrap
from revbridge.cli.common import app_for, config_option, emit, format_option


@click.command("export")
@config_option
@format_option
@click.option("--output", "output_name", default=None, help="Only this parquet_export output.")
def export(config_path: str | None, fmt: str, output_name: str | None) -> None:
    """Export events, journals and exception history to Parquet (incremental)."""
    with app_for(config_path) as app:
        exports = bootstrap.make_exports(app.config)
        if output_name is not None:
            if output_name not in exports:
                raise click.ClickException(f"no parquet_export output named {output_name!r}")
            exports = {output_name: exports[output_name]}
        if not exports:
            raise click.ClickException("no parquet_export output is configured")
        written = {name: export.run(app.store).rows for name, export in exports.items()}

    def text() -> None:
        for name, rows in written.items():
            summary = ", ".join(f"{table} {count}" for table, count in sorted(rows.items()))
            click.echo(f"{name}: {summary or 'nothing new'}")

    emit(fmt, {"outputs": written}, text)
