"""What counts as an outage of the journal, and what as a value it refused.

The difference decides whether an alarm may be acknowledged. During an
outage nothing is acknowledged: the write is retried (or the message
requeued) until the database takes it. A refusal is final for that value
only: retrying it would refuse it again for ever, so the caller reports it
and carries on with the rest.

Classified by what happened, not by the exception's Python class alone:
SQLAlchemy raises ``OperationalError`` both for a dead server and for a
statement timeout, and ``TimeoutError`` when its own connection pool is
full. Only the errors known to be about a value are refusals (SQLSTATE
classes 22 "data exception" and 23 "integrity constraint violation", their
SQLite equivalents, and a value the driver cannot even encode); every other
database error, known or not, is an outage, since taking an outage for a
refusal loses alarms and the reverse only delays them.
"""

from __future__ import annotations

import sqlalchemy as sa

# SQLSTATE classes (the first two characters) of a statement refused for its values.
REFUSED_CLASSES = {
    "22": "data exception",
    "23": "integrity constraint violation",
}


class JournalDown(Exception):
    """The database cannot be reached (as opposed to a value it refuses)."""


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def is_refusal(exc: BaseException) -> bool:
    """True when the database (or its driver) refused the values of a statement."""
    if isinstance(exc, ValueError):  # NUL, a lone surrogate: the driver cannot send it
        return True
    if not isinstance(exc, sa.exc.SQLAlchemyError):
        return False
    if getattr(exc, "connection_invalidated", False):
        return False
    code = _sqlstate(exc)
    if code is not None:
        return code[:2] in REFUSED_CLASSES
    if isinstance(exc, (sa.exc.IntegrityError, sa.exc.DataError)):
        return True
    return isinstance(exc, sa.exc.StatementError) and isinstance(exc.orig, ValueError)


def is_outage(exc: BaseException) -> bool:
    """True for any database error that is not a refused value: a lost, refused or
    timed-out connection, a full pool, a server shutting down, a missing schema."""
    return isinstance(exc, (sa.exc.SQLAlchemyError, JournalDown)) and not is_refusal(exc)
