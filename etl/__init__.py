"""usage-etl: collect vendor usage snapshots and load them into a database."""

__version__ = "0.1.0"
