"""Optional dependencies (extras): the library, or one line naming the extra that brings it."""

from __future__ import annotations

import importlib
from types import ModuleType

from etl.errors import UsageEtlError


class MissingExtraError(UsageEtlError):
    """An optional library a command needs is not installed; the message names the extra."""

    exit_code = 2


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import `module`, or raise MissingExtraError: "`what` needs `module`: pip install ..."."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{what} needs {module.split('.')[0]}, which is not installed: "
            f"pip install 'usage-etl[{extra}]'") from None


def pyarrow_parquet(what: str = "Parquet") -> ModuleType:
    """`pyarrow.parquet` (extra `parquet`, SPEC 12/13); MissingExtraError when it is missing."""
    require("pyarrow", "parquet", what)
    return require("pyarrow.parquet", "parquet", what)


def has_pyarrow() -> bool:
    """Whether pyarrow can be imported (a CSV FOCUS invoice is then read by it, in batches)."""
    try:
        importlib.import_module("pyarrow")
    except ImportError:
        return False
    return True
