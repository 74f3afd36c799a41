"""Untrusted text (file, class and folder names, error reasons, provenance) shown literally in Markdown.

Used by the app, the evaluate report, the cleaning workbench's card and ATTRIBUTION.md: a name must never become
markup, a link, HTML or a new Markdown block.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MD_SPECIAL = frozenset("\\`*_[]|~!#")
_HTML_SPECIAL = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# What every autolink needs in one run of text ("://", "//", "www.", "@", a dotted host name), escaped as well inside
# a linkable run. CommonMark shows a backslash-escaped ASCII punctuation character as the character itself.
_LINK_SPECIAL = _MD_SPECIAL | frozenset(":/.@")

# A run of non-space characters that a GFM renderer could turn into a link by itself (no [text](url) needed):
#  - "http://", "https://", "ftp://" and "www." autolinks (GitHub's cmark-gfm; marked with gfm: true, which is what
#    Gradio's frontend renders gr.Markdown with; its url rule is case-insensitive and starts wherever an earlier token
#    ends, so "xhttps://..." and "awww...." count too), markdown-it's linkify ("//host" and "scheme://" links);
#  - e-mail autolinks ("me@evil.example", "mailto:me@evil.example", "xmpp:...@...").
_LINKABLE = re.compile(r"\S*(?://|www\.|@)\S*", re.IGNORECASE)


def one_line(text: object) -> str:
    """Control characters (a line break in a file name) as \\xNN, so a name never starts a Markdown block."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _escape(text: str, special: frozenset[str]) -> str:
    return "".join(_HTML_SPECIAL.get(ch) or ("\\" + ch if ch in special else ch) for ch in text)


def md_text(text: object) -> str:
    """Plain text safe in Markdown: HTML specials as entities, Markdown punctuation backslash-escaped, control
    characters as \\xNN.

    A bare URL, "www." address or e-mail address is not left for the renderer to turn into a link: in such a run of
    non-space characters every : / . and @ is backslash-escaped too ("https\\:\\/\\/evil\\.example",
    "me\\@evil\\.example"). The page shows exactly the same characters, but no autolink rule (GFM's, marked's,
    markdown-it's linkify) sees "://", "//", "www." or "@" inside one run of text, nor a dotted host name."""
    s = one_line(text)
    out, pos = [], 0
    for m in _LINKABLE.finditer(s):
        out += [_escape(s[pos : m.start()], _MD_SPECIAL), _escape(m.group(), _LINK_SPECIAL)]
        pos = m.end()
    out.append(_escape(s[pos:], _MD_SPECIAL))
    return "".join(out)


def md_code(text: object) -> str:
    """A Markdown code span showing text literally: the fence is longer than any run of backticks in it."""
    text = one_line(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"
