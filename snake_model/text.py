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
