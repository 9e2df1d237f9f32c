"""What a password must be: 12 characters at least, and not one people guess.

NIST SP 800-63B's advice rather than composition rules: a minimum length and a check
against passwords known to be common. The list is zxcvbn's bundled one (30,000 passwords
from leaked sets, a well-kept library's data), and zxcvbn's estimate refuses the rest of
what is easy to guess (a keyboard walk, a repeated word, the person's own email).
"""

from __future__ import annotations

from wattline.errors import Invalid

MIN_LENGTH = 12
#: Longer than any passphrase; argon2 of megabytes would be a way to tie up the hashing slots.
MAX_LENGTH = 256
#: zxcvbn's score 3: "safely unguessable: moderate protection from offline slow-hash scenario".
MIN_SCORE = 3
#: zxcvbn's cost grows with length; what makes a long password weak shows in its start.
_CHECKED_PREFIX = 64


class WeakPassword(Invalid):
    """A password refused by the policy; the message says why, for the field it belongs to."""

    def __init__(self, detail: str) -> None:
        """`detail`: why, in a sentence a person can act on."""
        super().__init__("Weak password", detail, field="password")


def check_password(password: str, *, email: str = "", full_name: str = "") -> None:
    """Raise `WeakPassword` unless `password` may be set for this person."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"use at least {MIN_LENGTH} characters ({len(password)} given)")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"use at most {MAX_LENGTH} characters")
    if not password.strip():
        raise WeakPassword("a password of spaces only is not one")
    own = [part for part in (email, email.partition("@")[0], full_name, *full_name.split()) if len(part) >= 3]
    # Imported when a password is set, not at start: its word lists cost every API and
    # dashboard process ~13 MB that most of them never use.
    from zxcvbn import zxcvbn

    result = zxcvbn(password[:_CHECKED_PREFIX], user_inputs=own)
    for match in result["sequence"]:
        if match.get("dictionary_name") == "passwords" and len(match["token"]) >= len(password) - 2:
            raise WeakPassword("this is one of the most common passwords; choose another")
    lower = password.lower()
    if any(len(part) >= 4 and part.lower() in lower for part in own):
        raise WeakPassword("do not build the password from your own name or email")
    if result["score"] < MIN_SCORE:
        warning = result["feedback"]["warning"] or "it is too easy to guess"
        raise WeakPassword(f"{warning.rstrip('.')}; a few unrelated words make a strong password")
