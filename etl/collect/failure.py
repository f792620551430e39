"""The failure of one HTTP try, sorted into the poll outcome it gives (etl.collect.http)."""

from __future__ import annotations

from etl.errors import UsageEtlError
from etl.vendors.types import Outcome


class HttpFailure(UsageEtlError):
    """A failed try, sorted by `validate_response` / `classify_exception` into an `outcome`."""

    def __init__(
        self,
        message: str,
        outcome: Outcome,
        *,
        retriable: bool,
        http_status: int | None = None,
        retry_after: float | None = None,
        cause: Exception | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome, self.http_status = outcome, http_status
        self.retriable = retriable
        self.retry_after = retry_after
        # What the vendor's Retry-After asked for, before RETRY_AFTER_MAX_S was applied.
        self.retry_after_sent = retry_after
        self.cause = cause
        self.tries = 0
        self.latency_ms: float | None = None
