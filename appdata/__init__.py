"""appdata: stream and batch pipeline for app-download analytics on Dagster and AWS."""

__version__ = "0.1.0"
