"""The one rule for control characters in text a client sends, wherever it ends up: a header of a
composed message (mail/compose.py), or a stored field that reaches logs, IMAP commands and webhook
bodies (services/validation.py: names, ids, keys, paths, hosts, URLs).

Refused: CR and LF (named apart: in a header they would be header injection), the other C0 controls and
DEL, and lone surrogates (no UTF-8 form, so the database and orjson would refuse them later, uncoded;
JSON and GraphQL parsers refuse them today, but the services do not rely on their caller's parser).
Allowed: TAB, which RFC 5322 header text may hold (subjects keep it exactly, display names fold it), and
everything else Unicode has (C1 controls and U+2028 included: a header carries them as encoded-words and
they read back unchanged in Python's and Node's parsers).

Before issue 15 the services refused TAB and let lone surrogates through, while compose allowed TAB and
refused them; this rule is compose's, the stricter correct one of the two (refusing TAB refuses valid
subjects; a lone surrogate let through would fail later, uncoded).
"""

from __future__ import annotations

import re

_LINE_BREAK = re.compile(r"[\r\n]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # C0 controls but TAB (CR/LF found first, above)


def control_fault(value: str) -> str | None:
    """What `value` holds that text from a client must not, worded to follow "must not contain", or None."""
    if _LINE_BREAK.search(value):
        return "a line break (CR or LF)"
    if _CONTROL.search(value):
        return "control characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate (it is not valid Unicode)"
    return None
