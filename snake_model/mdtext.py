"""Untrusted text (file, class and folder names, error reasons, provenance) shown literally in Markdown.

Used by the app, the evaluate report and the cleaning workbench's card: a name must never become markup, a link,
HTML or a new Markdown block.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MD_SPECIAL = set("\\`*_[]|~!#")
_HTML_SPECIAL = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def one_line(text: object) -> str:
    """Control characters (a line break in a file name) as \\xNN, so a name never starts a Markdown block."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def md_text(text: object) -> str:
    """Plain text safe in Markdown: HTML specials as entities, Markdown punctuation backslash-escaped, control
    characters as \\xNN."""
    return "".join(_HTML_SPECIAL.get(ch) or ("\\" + ch if ch in _MD_SPECIAL else ch) for ch in one_line(text))


def md_code(text: object) -> str:
    """A Markdown code span showing text literally: the fence is longer than any run of backticks in it."""
    text = one_line(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"
