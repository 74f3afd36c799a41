"""snake_model.mdtext: untrusted text shown literally in Markdown, never a link, an image, HTML or a new block.

Renders md_text's output with markdown-it-py (installed with gradio). markdown-it-py has no GFM autolinks unless
linkify-it-py is installed, so a core rule here turns what a GFM renderer would autolink (marked's url rule, which
Gradio's frontend runs with gfm: true; GitHub's cmark-gfm) into links, run where markdown-it runs its own linkify:
on each text token before escapes are joined into it. When linkify-it-py is installed, markdown-it's own linkify
checks the output too. When node is on the PATH, Gradio's own Markdown renderer (its bundled marked) does as well.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from snake_model.mdtext import md_code, md_text, one_line

markdown_it = pytest.importorskip("markdown_it")

# marked's GFM url rule (gfm: true, case-insensitive) and its e-mail rule; cmark-gfm autolinks the same shapes.
GFM_URL = re.compile(r"(?:(?:ftp|https?)://|www\.)(?:[a-zA-Z0-9\-]+\.?)+[^\s<]*", re.IGNORECASE)
GFM_EMAIL = re.compile(r"[A-Za-z0-9._+-]+@[a-zA-Z0-9-_]+(?:\.[a-zA-Z0-9-_]*[a-zA-Z0-9])+(?![-_])")

# Bare text that a GFM renderer turns into a link by itself.
AUTOLINKED = [
    "Gopher snake, antivenom at https://evil.example/help",
    "Water snake www.evil.example",
    "WWW.EVIL.EXAMPLE and HTTPS://EVIL.EXAMPLE",
    "xhttps://evil.example/x",  # marked starts its url rule wherever a token ends, so mid-word counts
    "awww.evil.example",
    "*https://evil.example",  # after an escaped character a new token starts right at the scheme
    "ftp://evil.example/file",
    "write to help@evil.example",
    "mailto:help@evil.example",
    "https://evil.example/?a=1&b=<2>",
]
HOSTILE = [
    *AUTOLINKED,
    "//evil.example/protocol-relative",  # markdown-it's linkify links these
    "<https://evil.example>",
    "[Bitten? Call the antivenom hotline](https://evil.example/hotline)",
    "![x](http://127.0.0.1:9/track.png) **pwned** <b>bold</b>",
    '<img src=x onerror="alert(1)">',
    "[ref]: https://evil.example\n[ref]",
]
ORDINARY = [
    "Gopher snake",
    "Northern water snake (Nerodia sipedon)",
    "Rough green snake: Opheodrys aestivus, 1.5 m - ok",
    "Dr. Smith's photo #3, 50% crop",
    "a_b*c~d|e`f[g]h!i\\j",
    "Fundación Núñez",
    "line\nbreak",
]


def _gfm_autolinks(state) -> None:
    """A markdown-it core rule: GFM autolinks in text tokens (not in code, not inside a link), as link tokens."""
    from markdown_it.token import Token

    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        out, in_link = [], 0
        for tok in block.children:
            in_link += {"link_open": 1, "link_close": -1}.get(tok.type, 0)
            if tok.type != "text" or in_link:
                out.append(tok)
                continue
            text, pos = tok.content, 0
            for m in sorted([*GFM_URL.finditer(text), *GFM_EMAIL.finditer(text)], key=lambda m: m.start()):
                if m.start() < pos:
                    continue
                if m.start() > pos:
                    out.append(Token("text", "", 0, content=text[pos : m.start()]))
                out += [
                    Token("link_open", "a", 1, attrs={"href": m.group()}),
                    Token("text", "", 0, content=m.group()),
                    Token("link_close", "a", -1),
                ]
                pos = m.end()
            if pos < len(text):
                out.append(Token("text", "", 0, content=text[pos:]))
        block.children = out


def renderers() -> list:
    """markdown-it-py set up as GFM renders: raw HTML on, tables, strikethrough, autolinks (see the module doc)."""
    md = markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.core.ruler.before("text_join", "gfm_autolinks", _gfm_autolinks)
    out = [md]
    try:
        import linkify_it  # noqa: F401 - optional: markdown-it's own linkify
    except ImportError:
        return out
    gfm = markdown_it.MarkdownIt("gfm-like")
    gfm.linkify.set({"fuzzy_link": False})  # GFM links no bare "host.tld" (only www., scheme:// and e-mail)
    return [*out, gfm]


def _text(rendered: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()


def test_the_autolink_emulation_links_what_gfm_links():
    md = renderers()[0]
    for raw in AUTOLINKED:
        assert "<a " in md.render(raw), raw  # else the tests below would prove nothing
    assert "<a " not in md.render("`https://evil.example` and plain text")  # never inside code


@pytest.mark.parametrize("md", renderers(), ids=lambda md: "emulated-gfm" if "gfm_autolinks" in str(md) else "linkify")
@pytest.mark.parametrize("raw", HOSTILE)
def test_no_hostile_name_becomes_a_link_an_image_or_html(md, raw):
    rendered = md.render(f"Knows 4 species: {md_text(raw)}, and more.")
    for tag in ("<a", "<img", "<b>", "<strong", "<em", "<h1", "<li", "<blockquote", "<code"):
        assert tag not in rendered, (raw, md_text(raw), rendered)
    assert _text(rendered) == f"Knows 4 species: {one_line(raw)}, and more."  # the same characters are shown


@pytest.mark.parametrize("raw", HOSTILE + ORDINARY)
def test_alone_on_a_line_or_in_a_table_cell_a_name_shows_as_it_is(raw):
    md = renderers()[0]
    alone = md.render(md_text(raw))
    assert alone.startswith("<p>") and alone.count("<p>") == 1 and "<a" not in alone, alone
    assert _text(alone) == one_line(raw)
    cell = md.render(f"| name |\n| --- |\n| {md_text(raw).replace('|', chr(92) + '|')} |\n")
    assert "<a" not in cell and _text(cell.split("<tbody>")[1]) == one_line(raw)


@pytest.mark.parametrize("raw", ORDINARY)
def test_ordinary_names_keep_their_markdown_source_as_before(raw):
    # No URL, www. or @ in it: only the characters that always were escaped are (the other Markdown outputs'
    # exact text stays as it was).
    s = one_line(raw)
    expected = "".join(
        {"&": "&amp;", "<": "&lt;", ">": "&gt;"}.get(ch) or ("\\" + ch if ch in "\\`*_[]|~!#" else ch) for ch in s
    )
    assert md_text(raw) == expected


def test_bare_urls_and_addresses_are_escaped_but_read_the_same():
    assert md_text("see https://evil.example/help") == "see https\\:\\/\\/evil\\.example\\/help"
    assert md_text("www.evil.example") == "www\\.evil\\.example"
    assert md_text("a@b.example") == "a\\@b\\.example"


def test_code_spans_never_link():
    md = renderers()[0]
    for raw in HOSTILE:
        rendered = md.render(md_code(raw))
        assert "<a" not in rendered and "<img" not in rendered, rendered
        assert html.unescape(re.sub(r"</?(p|code)>", "", rendered)).strip() == one_line(raw).strip()


def _gradio_marked_bundle() -> Path | None:
    try:
        import gradio
    except ImportError:
        return None
    chunks = Path(gradio.__file__).parent / "templates" / "node" / "build" / "server" / "chunks"
    for f in sorted(chunks.glob("markdown-code-*.js")):
        if "function lt({header_links" in f.read_text(encoding="utf-8"):
            return f
    return None


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run Gradio's own Markdown renderer")
def test_gradios_own_markdown_renderer_makes_no_link_of_them(tmp_path):
    bundle = _gradio_marked_bundle()
    if bundle is None:
        pytest.skip("this gradio has no server-side Markdown bundle this test knows")
    # The bundle's Markdown factory (marked with gfm: true, what gr.Markdown renders with) is not exported: a copy
    # exports it, its relative imports pointed at the installed chunks.
    src = bundle.read_text(encoding="utf-8")
    src = re.sub(r"""(from |import )'\./""", lambda m: f"{m.group(1)}'{bundle.parent.as_uri()}/", src)
    (tmp_path / "md.mjs").write_text(src + "\nexport { lt as makeMarkdown };\n", encoding="utf-8")
    (tmp_path / "render.mjs").write_text(
        "import { makeMarkdown } from './md.mjs';\n"
        "import { readFileSync } from 'fs';\n"
        "const md = makeMarkdown({header_links: false, line_breaks: true, latex_delimiters: []});\n"
        "const out = [];\n"
        "for (const t of JSON.parse(readFileSync(0, 'utf8'))) out.push(await md.parse(t));\n"
        "console.log(JSON.stringify(out));\n",
        encoding="utf-8",
    )
    texts = AUTOLINKED + [md_text(raw) for raw in HOSTILE + ORDINARY]
    res = subprocess.run(
        ["node", str(tmp_path / "render.mjs")], input=json.dumps(texts), capture_output=True, text=True, timeout=120
    )
    if res.returncode != 0:
        pytest.skip(f"Gradio's Markdown bundle did not run here: {res.stderr[-300:]}")
    rendered = json.loads(res.stdout)
    assert all("<a " in r for r in rendered[: len(AUTOLINKED)]), rendered[
        : len(AUTOLINKED)
    ]  # the raw names do become links
    for raw, r in zip(HOSTILE + ORDINARY, rendered[len(AUTOLINKED) :], strict=True):
        assert "<a" not in r and "<img" not in r, (raw, r)
        assert _text(r) == one_line(raw), (raw, r)
