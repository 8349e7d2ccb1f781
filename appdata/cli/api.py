"""`appdata api`: serve the ingest API locally with uvicorn."""

import click


def register(group: click.Group) -> None:
    """Add this concern's commands to the `appdata` group."""

    @group.command()
    @click.option("--host", default=None, help="Interface (default APPDATA_API_HOST or 127.0.0.1).")
    @click.option("--port", type=int, default=None, help="Port (default APPDATA_API_PORT or 8000).")
    @click.option("--workers", type=int, default=1, show_default=True,
                  help="Worker processes (validation is CPU-bound; 2 overlaps it with AWS calls).")
    @click.option("--log-level", default="info", show_default=True)
    def api(host: str | None, port: int | None, workers: int, log_level: str) -> None:
        """Serve the ingest API (POST /v1/downloads, GET /v1/users/{id}/downloads, /docs)."""
        import uvicorn

        from appdata.api.app import create_app
        from appdata.api.server import server_options
        from appdata.config import Settings

        settings = Settings.from_env()
        host = host or settings.api_host
        port = port if port is not None else settings.api_port
        click.echo(f"ingest API on http://{host}:{port} (docs at /docs)")
        if workers > 1:  # each worker builds its own app (and clients) from the environment
            uvicorn.run("appdata.api.app:app", host=host, port=port, workers=workers, log_level=log_level,
                        **server_options())
        else:
            uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, **server_options())
