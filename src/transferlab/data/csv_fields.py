"""Reading CSV and TSV files whose cells may be long: the `csv` module refuses a field above 131,072 characters by
default, while a text table's text may be a whole document (text backbones truncate it to ``max_length`` tokens)."""

from __future__ import annotations

import csv

__all__ = ["CSV_FIELD_LIMIT", "allow_long_csv_fields"]

# the largest limit every platform's C long holds (32 bits on Windows): 2 GiB characters in one cell
CSV_FIELD_LIMIT = 2**31 - 1


def allow_long_csv_fields() -> None:
    """Raise the `csv` module's field size limit to `CSV_FIELD_LIMIT` (call before reading a table).

    The limit is process-wide; this only ever raises it, so a larger limit set by the caller's program stays.
    """
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
