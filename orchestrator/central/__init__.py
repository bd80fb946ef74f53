"""acefleet-central: fleet view, engine claims, stream registry, operator API, dashboard."""

__version__ = "0.1.0"
