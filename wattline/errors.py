"""Errors that the core's write functions raise, and that every door maps the same way.

The API turns them into problem details (404, 409, 422), the dashboard into a message
next to the field, the CLI into an exit code. A core function never raises an HTTP
error: it does not know which door it was called through.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of the errors a caller can show to a user; `str(exc)` is the sentence."""

    title = "Invalid request"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        """`field` names the input the error concerns, for forms that show it beside it."""
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(DomainError):
    """The object does not exist, or belongs to another tenant: the same answer for both."""

    title = "Not found"

    def __init__(self, what: str, *, field: str | None = None) -> None:
        """`what` names the kind of object ("site", "parent node")."""
        super().__init__(f"no such {what}", field=field)
        self.what = what


class Conflict(DomainError):
    """The change clashes with what exists (a phase already taken, a node with children)."""

    title = "Conflict"


class Forbidden(DomainError):
    """The caller may see the object, but not this (an installer and a site's costs)."""

    title = "Forbidden"


class Invalid(DomainError):
    """The input is well-formed but not acceptable (a band overlap, a kind that cannot be)."""

    def __init__(self, title: str, detail: str, *, field: str | None = None) -> None:
        """`title` is the short kind of problem ("Invalid CSV"), `detail` the sentence."""
        super().__init__(detail, field=field)
        self.title = title


class RowErrors(Invalid):
    """An upload with bad rows: every one of them, each with its line number."""

    def __init__(self, title: str, rows: list[tuple[int, str]]) -> None:
        """`rows`: (line, what is wrong), in line order."""
        first = "; ".join(f"line {line}: {why}" for line, why in rows[:3])
        more = f" (and {len(rows) - 3} more)" if len(rows) > 3 else ""
        super().__init__(title, f"{len(rows)} row(s) refused, nothing imported: {first}{more}", field="file")
        self.rows = rows
