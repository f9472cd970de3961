"""EmailEngine's `previewText`: the preheader a mail client shows after the subject, as a hidden div.

It is text put into the html body, before the message is composed, exactly as EmailEngine 2.79.2 does
it (lib/get-raw-email.js, `addPreviev`): the same hidden div (hidden from Outlook too, by `mso-hide` and
the conditional comment), followed by 100 invisible spacers so the client does not fill the preheader
with the start of the body; placed right after the `<body …>` tag's `>` (looked for within 1,000
characters of `<body`), else at the very start of an html without a body tag. The text is put in as
given: like EmailEngine's, it is html. A message without html gets no preview text.
"""

from __future__ import annotations

import re

MAX_PREVIEW_TEXT = 1024  # EmailEngine's limit
_BODY_START = re.compile(r"<body\b", re.IGNORECASE)
_MAX_TAG_SCAN = 1000
_SPACERS = "&#8199;&#65279;&#847; " * 100


def _hidden_div(preview_text: str) -> str:
    return f"""<!--[if !gte mso 9]><!---->
<div style="
    display:none !important;
    max-height: 0px;
    max-width: 1px;
    font-size: 1px;
    line-height: 1px;
    opacity: 0.0;
    mso-hide: all;
    overflow: hidden !important;
    visibility: hidden !important;
">{preview_text} {_SPACERS}</div>
<!--<![endif]-->"""


def with_preview_text(html: str, preview_text: str) -> str:
    """`html` with the hidden preheader `preview_text` in it (unchanged when the text is empty, or when a
    `<body` tag has no `>` within 1,000 characters, as EmailEngine leaves it)."""
    if not preview_text:
        return html
    body = _BODY_START.search(html)
    if body is None:
        return f"{_hidden_div(preview_text)}\n{html}"
    end = html.find(">", body.end(), body.end() + _MAX_TAG_SCAN)
    if end < 0:
        return html
    return html[: end + 1] + "\n" + _hidden_div(preview_text) + html[end + 1 :]
