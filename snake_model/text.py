"""File names that are not UTF-8: Python holds their bytes as lone surrogates, which cannot be written as UTF-8."""

from __future__ import annotations


def is_utf8(text: str) -> bool:
    """False for a name decoded from bytes in another encoding (the bytes are kept as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utf8_safe(text: str) -> str:
    """text as it can be printed and written as UTF-8: such bytes become \\xNN escapes; UTF-8 text is unchanged."""
    if is_utf8(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from a byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_line(e: BaseException, limit: int = 200) -> str:
    """An exception as one short printable line, "Type: message" (matplotlib's parse errors run over several lines;
    a name that is not UTF-8 is escaped)."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return utf8_safe(f"{type(e).__name__}: {text}" if text else type(e).__name__)
