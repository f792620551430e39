"""The exception hierarchy: every error usage-etl raises on purpose derives from UsageEtlError."""

from __future__ import annotations

from datetime import datetime


class UsageEtlError(Exception):
    """Root of all usage-etl errors; the CLI turns these into one-line messages."""

    exit_code = 1


class ConfigError(UsageEtlError):
    """The configuration is invalid; carries one message per problem."""

    exit_code = 2

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class InputError(UsageEtlError):
    """Bad user input (arguments, files) that is not config."""

    exit_code = 2


class DatabaseUrlError(InputError):
    """A database URL that cannot be used; the CLI names where it came from (SPEC 2)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"database_url: {problem}")


class SchemaOutdatedError(UsageEtlError):
    """The database schema is behind the newest migration."""

    exit_code = 2


class DatabaseError(UsageEtlError):
    """The database could not be reached or written."""

    exit_code = 1


class SecretError(ConfigError):
    """A source's credential could not be read."""


class ParseError(UsageEtlError):
    """A vendor body does not have the documented shape or values."""


class DeliveryError(UsageEtlError):
    """A notification could not be delivered (the message never holds the URL or password)."""


class DatabaseTimeoutError(DatabaseError):
    """A database step got no answer within its client-side time limit (a hung server)."""


class RetiredHistoryError(UsageEtlError):
    """A report asked for a period whose samples were retired (never shown as zeros)."""

    def __init__(self, before: datetime, archive_dir: str | None = None) -> None:
        from etl.timefmt import utc_z  # etl.timefmt imports this module

        where = f"the archive files under {archive_dir}" if archive_dir else "the archive files"
        super().__init__(
            f"the history before {utc_z(before)} was retired ([retention] samples_days); "
            f"its raw responses are in {where}: import them into another database "
            "to report on that period")
        self.before = before
