"""The collect side: HTTP to vendors, pacing per credential, one poll into a PollRecord.

May import: etl.vendors, etl.config, etl.errors, etl.redact, etl.timefmt, requests, urllib3.
Never the database (SQLAlchemy), pandas or click.
"""
