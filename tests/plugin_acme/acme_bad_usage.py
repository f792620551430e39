"""A plugin whose parse has neither plugin API's signature (kind "acmebad"): refused at load."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from acme_usage import KIND as ACME

from etl.vendors.types import Observation


def parse(body: Any) -> Observation:
    """Takes the body alone: where the source's name and times come from is unsaid."""
    raise NotImplementedError(body)


KIND = replace(ACME, name="acmebad", parse=parse)
