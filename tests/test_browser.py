"""A real browser (Debian's chromium driven by Playwright) uses the app: upload, read the label, explain, model tab.

Needs `apt-get install -y chromium`; it never downloads a browser. SKIP_BROWSER_TESTS=1 skips it on purpose;
otherwise a missing /usr/bin/chromium is a failure, not a silent skip. Only 127.0.0.1 is ever contacted: every
other request (web fonts, CDNs) is aborted and the browser's proxy points at a closed loopback port.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from tests.conftest import free_port

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--proxy-server=http://127.0.0.1:9",  # anything not bypassed goes nowhere
    "--proxy-bypass-list=127.0.0.1",
]
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def browser_ready():
    if os.environ.get("SKIP_BROWSER_TESTS") == "1":
        pytest.skip("SKIP_BROWSER_TESTS=1")
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} not found: the browser tests need Debian's chromium. Run `apt-get install -y chromium` "
            "(or set SKIP_BROWSER_TESTS=1 to skip them on purpose)."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


def _serve(demo):
    """Launch demo on a free loopback port; yield its URL, then close it."""
    import app

    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def app_url(tiny_artifact, browser_ready):
    import app
    from snake_model.predictor import Predictor

    demo = app.build_demo(Predictor(tiny_artifact), "test", None, tiny_artifact)
    yield from _serve(demo)


@pytest.fixture
def page(browser_ready, app_url, tmp_path):
    yield from _open(browser_ready, app_url, tmp_path)


def _open(browser_ready, url: str, tmp_path: Path):
    """A loopback-only headless chromium page at url (a screenshot of its last state is left in tmp_path)."""
    ctx = browser_ready.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        headless=True,
        args=ARGS,
        viewport={"width": 1280, "height": 1000},
    )
    blocked: list[str] = []

    def only_loopback(route):
        if urlparse(route.request.url).hostname == "127.0.0.1" or route.request.url.startswith(("data:", "blob:")):
            return route.continue_()
        blocked.append(route.request.url)
        return route.abort()

    ctx.route("**/*", only_loopback)
    ctx.set_default_timeout(TIMEOUT_MS)
    pg = ctx.new_page()
    pg.goto(url, wait_until="domcontentloaded")
    try:
        yield pg
    finally:
        pg.screenshot(path=str(tmp_path / "last.png"), full_page=True)
        ctx.close()


@pytest.fixture
def photo(tmp_path) -> Path:
    p = tmp_path / "snake.jpg"
    Image.new("RGB", (160, 120), (215, 40, 40)).save(p)
    return p


def test_a_browser_uploads_a_photo_reads_the_label_and_confidences_then_sees_a_gradcam(page, photo, tmp_path):
    page.locator("#classify-input input[type=file]").set_input_files(str(photo))
    top = page.locator("#label [data-testid=label-output-value]")
    top.wait_for(state="visible")
    names = page.locator("#label dl.label dt.text").all_inner_texts()
    confs = page.locator("#label dl.label dd.confidence").all_inner_texts()
    assert len(names) == 3 and len(confs) == 3, (names, confs)
    assert top.inner_text().strip() in {n.strip() for n in names}
    values = [float(re.sub(r"[^0-9.]", "", c)) for c in confs]
    assert all(0 <= v <= 100 for v in values) and 95 <= sum(values) <= 105, confs
    verdict = page.locator("#verdict")
    assert top.inner_text().strip() in verdict.inner_text() or "snakes I know" in verdict.inner_text()
    assert "Not for snakebite or medical decisions" in page.locator("#safety").inner_text()
    page.screenshot(path=str(tmp_path / "classify.png"), full_page=True)

    page.get_by_role("tab", name="Explain").click()
    page.locator("#explain-input input[type=file]").set_input_files(str(photo))
    page.locator("#explain-button").click()
    out = page.locator("#explain-output img")
    out.wait_for(state="visible")
    page.wait_for_function(
        "() => { const i = document.querySelector('#explain-output img'); return i && i.complete && i.naturalWidth > 0 }"
    )
    assert "Heatmap for" in page.locator("#explain-note").inner_text()
    page.screenshot(path=str(tmp_path / "explain.png"), full_page=True)  # kept for a person to look at


def test_a_browser_upload_of_an_html_file_shows_a_clear_error_and_the_page_still_works(page, photo, tmp_path):
    bad = tmp_path / "fake.jpg"
    bad.write_bytes(b"<!doctype html><html><body>403 Forbidden</body></html>")
    page.locator("#classify-input input[type=file]").set_input_files(str(bad))
    page.get_by_text(re.compile("HTML page, not an image")).first.wait_for(state="visible")
    page.screenshot(path=str(tmp_path / "error.png"))
    page.reload(wait_until="domcontentloaded")
    page.locator("#classify-input input[type=file]").set_input_files(str(photo))
    page.locator("#label [data-testid=label-output-value]").wait_for(state="visible")


def test_the_model_tab_shows_metrics_from_the_artifact(page):
    page.get_by_role("tab", name="Model").click()
    page.get_by_text("Per-class metrics").first.wait_for(state="visible")
    assert page.get_by_text("Top losses").first.is_visible()
    assert page.get_by_text("Revision:").first.is_visible()


def test_the_cleaning_workbench_page_shows_the_first_card_as_text_and_its_keys_act_on_disk(browser_ready, tmp_path):
    """The page's load event (which also installs the key shortcuts) must show the first card; names are shown as
    literal text, never as markup; the d key deletes the shown image to _trash/ and the next card follows."""
    from tests.conftest import free_port
    from train.clean_ui import build_ui

    root = tmp_path / "data"
    odd = "<b>bold</b> **two** _x_"
    files = [("cobra", "a_1.jpg"), ("cobra", "b*2*.jpg"), (odd, "c.jpg")]
    rows = []
    for i, (label, name) in enumerate(files):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (40 + 60 * i, 90, 160)).save(root / label / name)
        rows.append(
            {
                "path": f"{label}/{name}",
                "label": label,
                "pred_label": "viper",
                "pred_conf": "0.9",
                "label_quality": str(0.1 * (i + 1)),
                "label_issue": "True",
                "outlier": "",
                "outlier_score": "0",
                "dup_of": "",
                "flags": "",
                "source": "web",
                "licence": "cc0",
                "author": "**bob**",
            }
        )
    demo = build_ui(root, rows)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        for pg in _open(browser_ready, f"http://127.0.0.1:{port}/", tmp_path):
            card = pg.get_by_text("likely wrong label · 1 of 3")
            card.wait_for(state="visible")  # the load event showed the first card (no "unknown queue None")
            text = card.locator("xpath=ancestor::div[contains(@class,'prose')][1]").inner_text()
            assert "file: cobra/a_1.jpg" in text and "author: **bob**" in text, text
            pg.wait_for_function("() => window.__cleanKeys === true")
            pg.keyboard.press("d")
            pg.get_by_text("likely wrong label · 1 of 2").wait_for(state="visible")
            assert (root / "_trash" / "cobra" / "a_1.jpg").is_file() and not (root / "cobra" / "a_1.jpg").exists()
            text = (
                pg.get_by_text("likely wrong label · 1 of 2")
                .locator("xpath=ancestor::div[contains(@class,'prose')][1]")
                .inner_text()
            )
            assert "file: cobra/b*2*.jpg" in text, text
            pg.keyboard.press("j")
            pg.get_by_text("likely wrong label · 2 of 2").wait_for(state="visible")
            prose = pg.get_by_text("likely wrong label · 2 of 2").locator(
                "xpath=ancestor::div[contains(@class,'prose')][1]"
            )
            assert f"given {odd}" in prose.inner_text(), prose.inner_text()
            assert prose.locator("b, img, em").count() == 0 and prose.locator("strong").count() == 3
    finally:
        demo.close()


HOSTILE_CREDITS = (
    "# Image attribution\n\n| file | licence | use | author | source |\n|---|---|---|---|---|\n"
    "| a.jpg | cc-by | publishable | [Bitten? Call the antivenom hotline](https://evil.example/hotline) | inat |\n"
    "| b.jpg | cc0 | publishable | ![x](http://127.0.0.1:9/track.png) **pwned** <b>bold</b> | inat |\n"
)


@pytest.fixture(scope="module")
def abstaining_url(tiny_artifact, browser_ready, tmp_path_factory):
    """An app whose model abstains on every photo, with photo credits whose author names are markup."""
    import shutil

    import app
    from snake_model.predictor import Predictor

    d = tmp_path_factory.mktemp("hostile") / "model"
    shutil.copytree(tiny_artifact, d)
    (d / "ATTRIBUTION.md").write_text(HOSTILE_CREDITS)
    pred = Predictor(d)
    pred.spec.abstain_threshold = -1.0  # every score is above it
    demo = app.build_demo(pred, "test", None, d)
    yield from _serve(demo)


def test_when_the_model_abstains_the_label_names_no_species(browser_ready, abstaining_url, photo, tmp_path):
    for page in _open(browser_ready, abstaining_url, tmp_path):
        page.locator("#classify-input input[type=file]").set_input_files(str(photo))
        top = page.locator("#label [data-testid=label-output-value]")
        top.wait_for(state="visible")
        page.get_by_text("snakes I know").first.wait_for(state="visible")
        names = page.locator("#label dl.label dt.text").all_inner_texts()
        assert top.inner_text().strip() == "not one of my 3 snakes", top.inner_text()
        assert len(names) == 3 and top.inner_text().strip() not in names  # the scores stay, for reference
        assert "doesn't look like any of the 3 snakes I know" in page.locator("#verdict").inner_text()


def test_photo_credits_render_no_links_images_or_markup_from_author_names(browser_ready, abstaining_url, tmp_path):
    for page in _open(browser_ready, abstaining_url, tmp_path):
        page.get_by_role("tab", name="Model").click()
        page.get_by_text("Photo credits (ATTRIBUTION.md)").click()
        page.get_by_text("Bitten? Call the antivenom hotline", exact=False).first.wait_for(state="visible")
        hrefs = [a.get_attribute("href") or "" for a in page.locator("a").all()]
        assert not [h for h in hrefs if "evil.example" in h], hrefs
        assert not [s for s in (i.get_attribute("src") or "" for i in page.locator("img").all()) if "track" in s]
        assert not [t for t in page.locator("strong, b").all_inner_texts() if "pwned" in t or "bold" in t]
        # shown literally, so a reader sees exactly what the file says
        assert page.get_by_text("**pwned** <b>bold</b>", exact=False).count() >= 1
