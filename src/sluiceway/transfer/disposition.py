"""``Content-Disposition`` for a file name of any alphabet (RFC 6266 and RFC 8187).

Old clients read only ``filename="..."``, which must be ASCII (and quoted-string safe); modern
ones prefer ``filename*=UTF-8''...`` (percent-encoded UTF-8). So a name that is not plain
ASCII gets both: an ASCII approximation (accents dropped, anything else ``_``) and the exact
name.

>>> content_disposition("report.pdf")
'inline; filename="report.pdf"'
>>> content_disposition("Résumé 2024.pdf", attachment=True)
'attachment; filename="Resume 2024.pdf"; filename*=UTF-8\\'\\'R%C3%A9sum%C3%A9%202024.pdf'
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

# Characters RFC 8187's attr-char allows unencoded (besides letters and digits).
_ATTR_SAFE = "!#$&+-.^_`|~"
_NOT_PLAIN = re.compile(r'[^\x20-\x7e]|["\\%]')


def ascii_fallback(filename: str) -> str:
    """An ASCII stand-in for ``filename``, safe inside a quoted string.

    >>> ascii_fallback('naïve "plan".txt'), ascii_fallback("数据.csv")
    ('naive _plan_.txt', '__.csv')
    """
    decomposed = unicodedata.normalize("NFKD", filename)
    without_marks = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NOT_PLAIN.sub("_", without_marks) or "download"


def content_disposition(filename: str, *, attachment: bool = False) -> str:
    """The header value: ``inline`` (display it) or ``attachment`` (save it)."""
    kind = "attachment" if attachment else "inline"
    fallback = ascii_fallback(filename)
    value = f'{kind}; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe=_ATTR_SAFE)}"
    return value
