"""Job ids: what is accepted, and how one becomes exactly one URL path segment.

Every entry (config, CLI, file, control API, queue, discovery, the state file, the
library API) passes ids through :func:`validate_job_id`, once, as they arrive; inside,
ids are trusted. Only :mod:`heartbeat.client` encodes them, on every request, with
:func:`checked_segment`: it validates nothing for an ordinary id (the one regular
expression that finds it needs no escape also proves it valid), and still refuses an
id that could not be checked in, should one reach it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import quote

from heartbeat.errors import InvalidJobId

MAX_ID_BYTES = 512
#: Exactly the strings ``quote(id, safe=",*")`` leaves as they are (RFC 3986
#: unreserved characters, plus ``,`` and ``*`` as the official client keeps them).
_AS_IS = re.compile(r"[A-Za-z0-9_.~,*-]+")


def validate_job_id(job_id: object) -> str:
    """Return ``job_id`` unchanged if it can be checked in, else raise InvalidJobId.

    Refused: non-strings, the empty string, more than 512 bytes of UTF-8, control
    characters (C0, C1, DEL) and lone surrogates (which have no UTF-8 form).
    Everything else, ``/``, ``..``, ``?``, ``#``, ``%``, spaces and any other unicode,
    is a legal, if odd, id: the encoding keeps it inside its own path segment.
    """
    if not isinstance(job_id, str):
        raise InvalidJobId(f"job id must be a string, not {type(job_id).__name__}")
    if 0 < len(job_id) <= MAX_ID_BYTES and job_id.isascii() and job_id.isprintable():
        return job_id  # the common case, decided without a look at each character
    if not job_id:
        raise InvalidJobId("job id is empty")
    try:
        size = len(job_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidJobId("job id is not valid unicode (lone surrogate)") from None
    if size > MAX_ID_BYTES:
        raise InvalidJobId(f"job id is {size} bytes long; the limit is {MAX_ID_BYTES}")
    for position, char in enumerate(job_id):
        if unicodedata.category(char) == "Cc":
            raise InvalidJobId(f"job id has a control character {char!r} at position {position}")
    return job_id


def validate_many(job_ids: Iterable[object]) -> list[str]:
    """Every id of ``job_ids`` validated (:func:`validate_job_id`), as a list; the first
    invalid one raises."""
    return [validate_job_id(job_id) for job_id in job_ids]


async def validate_many_async(job_ids: Iterable[object], chunk: int) -> list[str]:
    """:func:`validate_many` for long lists, from async code: ``chunk`` ids at a time,
    with a yield to the event loop between chunks."""
    import anyio.lowlevel

    ids = list(job_ids)
    valid: list[str] = []
    for start in range(0, len(ids), chunk):
        if start:
            await anyio.lowlevel.checkpoint()
        valid += validate_many(ids[start : start + chunk])
    return valid


def encode_segment(job_id: str) -> str:
    """Percent-encode ``job_id`` as exactly one path segment, as the official client does.

    ``quote(id, safe=",*")`` leaves ``.`` alone, so the segments ``.`` and ``..`` are
    spelled ``%2E`` and ``%2E%2E``: no normalisation on the way (ours, a proxy's,
    the server's) may then read them as "this" or "parent" directory.
    """
    # Most ids need no escape at all: one C call decides, before urllib's Python does.
    encoded = job_id if _AS_IS.fullmatch(job_id) else quote(job_id, safe=",*")
    if encoded in {".", ".."}:
        encoded = encoded.replace(".", "%2E")
    return encoded


def checked_segment(job_id: str) -> str:
    """:func:`encode_segment` of an id that can be checked in; InvalidJobId, before any
    request, for one that cannot (:func:`validate_job_id`).

    For an ordinary id this validates nothing: the one C call that finds it needs no
    escape (at most MAX_ID_BYTES ASCII characters, none a control character) also
    proves it valid. Only an odd one (escapes, unicode, too long) is checked again."""
    if len(job_id) <= MAX_ID_BYTES and _AS_IS.fullmatch(job_id):
        return "%2E" * len(job_id) if job_id in {".", ".."} else job_id
    return encode_segment(validate_job_id(job_id))


def printable(job_id: str, limit: int = 80) -> str:
    """A short, log-safe rendering of an id (for error messages about bad ids)."""
    shown = job_id if len(job_id) <= limit else job_id[:limit] + "..."
    return repr(shown)
