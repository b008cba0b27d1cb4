"""The extra columns of prompt rows (an `answer`, a `label`, an `id`...), which step 3 passes on to reward functions.

A reward function takes one list per column, aligned with the prompts, and the rows end up in samples.jsonl; so every
row carries every extra column (None where its record lacks it or holds null) and every value is one JSON can write.
"""
from __future__ import annotations

import datetime
import decimal
from typing import Any

from utils.data.sources import Row


def json_value(value: Any) -> Any:
    """value as JSON can write it: dates and times as ISO 8601 text, decimals as their exact text; TypeError naming the
    type where there is no such form (bytes, images, arrays)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, (datetime.date, datetime.time)):  # a datetime is a date
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def settle_columns(rows: list[Row]) -> tuple[dict[str, int], dict[str, str]]:
    """Make one source's prompt rows' extra columns JSON values, in place.

    Returns each extra column kept, in the order first met, with how many rows lack it or hold null, and each column
    not kept, with the type of a value that has no JSON form: such a column leaves every row of the source, so that
    a reward function never sees it in some rows and not in others.
    """
    columns = list(dict.fromkeys(column for row in rows for column in row if column != "prompt"))
    unkept: dict[str, str] = {}
    for column in columns:
        try:
            for row in rows:
                if column in row:
                    row[column] = json_value(row[column])
        except TypeError as err:
            unkept[column] = str(err)
            for row in rows:
                row.pop(column, None)
    return {c: sum(row.get(c) is None for row in rows) for c in columns if c not in unkept}, unkept


def align_columns(rows: list[Row]) -> None:
    """Give every row every extra column that any row has (rows of several sources), None where it lacks one."""
    columns = list(dict.fromkeys(column for row in rows for column in row if column != "prompt"))
    for row in rows:
        for column in columns:
            row.setdefault(column, None)
