"""``revbridge api``: serve the HTTP API (work queue and approvals) with uvicorn."""

from __future__ import annotations

import click

from revbridge.cli.common import app_for, config_option


@click.command("api")
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8835, show_default=True, type=int, help="Port to listen on.")
def api(config_path: str | None, host: str, port: int) -> None:
    """Serve the HTTP API (/v1/exceptions, /v1/approvals) until interrupted."""
    # Imported here, not at the top: every other command (a worker starting, an ingest)
    # would otherwise pay for importing FastAPI and uvicorn.
    import uvicorn  # noqa: PLC0415

    from revbridge.api import create_app  # noqa: PLC0415

    with app_for(config_path) as app:
        if not app.config.api.get("users"):
            raise click.ClickException("no api.users in the config: nobody could call the API")
        uvicorn.run(create_app(app), host=host, port=port, log_level="warning")
