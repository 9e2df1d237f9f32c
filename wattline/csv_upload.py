"""Reading a spreadsheet's CSV upload: UTF-8 (with or without Excel's byte-order mark), or a
refusal that names the line where the text stops being UTF-8."""

from __future__ import annotations

import csv
import io

from wattline.errors import Invalid


def dict_reader(data: bytes) -> csv.DictReader[str]:
    """The upload's rows as dicts keyed by its header line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise Invalid("Invalid CSV", f"line {line}: not UTF-8 text (save the sheet as CSV UTF-8)",
                      field="file") from exc
    return csv.DictReader(io.StringIO(text))
