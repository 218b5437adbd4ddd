"""Secrets out of everything drorch says or keeps: output, --json, logs, reports and the state store.

A URL's password and the values of query parameters that carry credentials are replaced by `***`
wherever a URL appears in a text; the playbook keeps the real value, for the call itself.
"""

from __future__ import annotations

import re

MASK = "***"
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s]*):[^/@\s]*@")
_QUERY = re.compile(r"(?P<head>[?&;](?:[a-z0-9_-]*(?:token|key|secret|passw(?:or)?d|pass|sig|signature|auth|"
                    r"credential|session)[a-z0-9_-]*)=)[^&#;\s'\"]*?(?=:?(?:[&#;\s'\"]|$))", re.IGNORECASE)
# A value ends before the colon of the sentence around it ("...?password=x: cannot be used"), which stays.


def redact(text: str) -> str:
    """`text` with every URL's password and credential-bearing query values masked."""
    return _QUERY.sub(rf"\g<head>{MASK}", _USERINFO.sub(rf"\g<head>:{MASK}@", text))
