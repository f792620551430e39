"""PostgreSQL monthly partitions of `samples` (SPEC 13): one per UTC month, made ahead.

`samples` is partitioned by range of `observed_at` (migration 0008): `samples_pYYYY_MM`
holds one UTC month, `samples_default` whatever arrives for a month with no partition yet
(nothing is ever refused). The daemon makes the coming months' partitions every day and the
bulk import those of the months it writes; making one moves its month's rows out of the
default partition in the same transaction. SQLite has no partitions: every call is a no-op.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text

from etl.store.packs import DEFAULT_PARTITION as PACKS_DEFAULT
from etl.store.packs import TABLE as PACKS
from etl.timefmt import month_start, next_month

DEFAULT_PARTITION = "samples_default"
MONTHS_AHEAD = 2
_NAME_RE = re.compile(r"^samples_p(\d{4})_(\d{2})$")
_PACKS_RE = re.compile(r"^sample_packs_p\d{4}_\d{2}$")
# One advisory lock for all partition making: two processes never make the same one at once.
_LOCK_KEY = 0x5A3D_0013
# Months known to have a partition, per database URL (partitions are never made twice).
_known: dict[str, set[str]] = {}


def partition_name(month: datetime) -> str:
    """`samples_pYYYY_MM` for the UTC month starting at `month`."""
    return f"samples_p{month:%Y_%m}"


def is_partition(name: str) -> bool:
    """Whether a table name is a partition of samples or of their packs (not a model's)."""
    return (name in (DEFAULT_PARTITION, PACKS_DEFAULT) or _NAME_RE.match(name) is not None
            or _PACKS_RE.match(name) is not None)


def pack_partition_name(month: datetime) -> str:
    """`sample_packs_pYYYY_MM` for the UTC month starting at `month` (etl.store.packs)."""
    return f"{PACKS}_p{month:%Y_%m}"


def month_of(name: str) -> datetime | None:
    """The UTC month a `samples_pYYYY_MM` partition holds (None for the default one)."""
    found = _NAME_RE.match(name)
    if found is None:
        return None
    return datetime(int(found[1]), int(found[2]), 1, tzinfo=UTC)


def is_partitioned(conn: Connection) -> bool:
    """Whether this database's samples table is partitioned (PostgreSQL at 0008 or later)."""
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.execute(text("SELECT relkind FROM pg_class WHERE oid = to_regclass('samples')"))
    return kind.scalar() == "p"


def existing(conn: Connection) -> set[str]:
    """Names of samples' partitions."""
    return set(conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('samples')")).scalars())


def ensure(engine: Engine, instants: Iterable[datetime]) -> list[str]:
    """Make the partitions of the UTC months of `instants` that do not exist; their names."""
    if engine.dialect.name != "postgresql":
        return []
    months = {month_start(at) for at in instants}
    known = _known.setdefault(engine.url.render_as_string(hide_password=True), set())
    wanted = sorted(m for m in months if partition_name(m) not in known)
    if not wanted:
        return []
    made: list[str] = []
    with engine.begin() as conn:
        if not is_partitioned(conn):
            return []
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        have = existing(conn)
        for month in wanted:
            name = partition_name(month)
            if name not in have:
                make(conn, month)
                made.append(name)
        known.update(existing(conn))
    return made


def ensure_ahead(engine: Engine, now: datetime, months: int = MONTHS_AHEAD) -> list[str]:
    """This month's partition and the next `months` ones (the daemon, daily)."""
    month, wanted = month_start(now), []
    for _ in range(months + 1):
        wanted.append(month)
        month = next_month(month)
    return ensure(engine, wanted)


def make(conn: Connection, month: datetime) -> None:
    """Create one month's partition, moving its rows out of the default partition first.

    With packs (migration 0010), the month's partition of the packs too.
    """
    _make(conn, "samples", partition_name(month), DEFAULT_PARTITION, "observed_at", month)
    if conn.exec_driver_sql(f"SELECT to_regclass('{PACKS}') IS NOT NULL").scalar():
        make_pack_partition(conn, month)


def make_pack_partition(conn: Connection, month: datetime) -> None:
    """Create one month's partition of the packs (`day` in that UTC month)."""
    _make(conn, PACKS, pack_partition_name(month), PACKS_DEFAULT, "day", month)


def _make(conn: Connection, table: str, name: str, default: str, column: str,
          month: datetime) -> None:
    lo = f"'{month.isoformat()}'"
    # December 9999 (SPEC 4's last month) reaches to the end of time.
    last = (month.year, month.month) == (9999, 12)
    hi = "MAXVALUE" if last else f"'{next_month(month).isoformat()}'"
    below = "" if last else f"AND {column} < {hi} "
    # The names and bounds are built here from a datetime, never from input.
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)")
    conn.exec_driver_sql(
        f"WITH moved AS (DELETE FROM {default} WHERE {column} >= {lo} "  # noqa: S608
        f"{below}RETURNING *) INSERT INTO {name} SELECT * FROM moved")
    conn.exec_driver_sql(
        f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})")


def forget(engine: Engine) -> None:
    """Forget the partitions known for this database (after a downgrade, in tests)."""
    _known.pop(engine.url.render_as_string(hide_password=True), None)
