"""Reading a spreadsheet's CSV upload: UTF-8 (with or without Excel's byte-order mark), or a
refusal that names the line where the text stops being UTF-8."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from typing import TypeVar

from wattline.errors import Invalid, RowErrors

T = TypeVar("T")


def dict_reader(data: bytes) -> csv.DictReader[str]:
    """The upload's rows as dicts keyed by its header line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise Invalid("Invalid CSV", f"line {line}: not UTF-8 text (save the sheet as CSV UTF-8)",
                      field="file") from exc
    return csv.DictReader(io.StringIO(text))


def parse_rows(data: bytes, columns: tuple[str, ...], parse: Callable[[dict[str, str]], T],
               refusals: Callable[[Sequence[T]], list[tuple[int, str]]], *, max_rows: int, what: str) -> list[T]:
    """The upload's rows, each made by `parse` (which raises ValueError with the reason for
    a bad one), then checked together by `refusals` (reasons by 1-based position). Every bad
    row is named with its line (`RowErrors`); nothing is returned unless all rows are good."""
    reader = dict_reader(data)
    if reader.fieldnames is None or not set(columns) <= {f.strip() for f in reader.fieldnames}:
        raise Invalid("Invalid CSV", f"the first line must name the columns {','.join(columns)}", field="file")
    rows: list[T] = []
    lines: list[int] = []
    errors: list[tuple[int, str]] = []
    for line, raw in enumerate(reader, start=2):
        try:
            rows.append(parse({(k or "").strip(): (v or "").strip() for k, v in raw.items()}))
        except ValueError as exc:
            errors.append((line, str(exc)))
            continue
        lines.append(line)
        if len(rows) > max_rows:
            raise Invalid("Too many rows", f"one upload holds at most {max_rows} {what}", field="file")
    errors += [(lines[i - 1], why) for i, why in refusals(rows)]
    if errors:
        raise RowErrors("Invalid CSV", sorted(errors))
    if not rows:
        raise Invalid("Invalid CSV", f"the file has a header but no {what}", field="file")
    return rows
