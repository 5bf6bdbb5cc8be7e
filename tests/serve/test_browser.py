"""End to end in a real headless Chromium: open the page, upload (pick, then drop) an image, get the translation;
with a MUNIT model, ask for another style and give a reference image's style.

Uses Debian's ``chromium`` (``.ci/install-browser`` installs it) driven by playwright; playwright's own browser
download is never used. Set UNITGAN_CHROMIUM to use another Chromium binary.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest
import torch
from munit_support import tiny_munit_checkpoint
from serve_support import png_bytes, random_image, tiny_checkpoint

from unitgan.inference import Translator
from unitgan.serve import create_app, serve_in_thread

TIMEOUT_MS = 30_000


def chromium_path() -> str:
    path = os.environ.get("UNITGAN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no chromium found: run .ci/install-browser (apt-get install chromium) or set UNITGAN_CHROMIUM")
    return path


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    torch.set_num_threads(1)
    translator = Translator.from_checkpoint(tiny_checkpoint(tmp_path_factory.getbasetemp()), "cpu")
    with serve_in_thread(create_app(translator)) as url:
        yield url


def test_page_translates_a_picked_and_a_dropped_image(server_url, tmp_path):
    from playwright.sync_api import sync_playwright

    picked = tmp_path / "sketch.png"
    random_image(36, 28, "L", seed=0).save(picked)
    dropped = png_bytes(random_image(20, 44, "RGB", seed=1))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server_url + "/")
            page.wait_for_selector("#direction option[value=b2a]", state="attached")
            assert not page.is_visible("#another-style") and not page.is_visible("#style-file")  # UNIT: unimodal

            # pick a grey image, translate a2b
            page.select_option("#direction", "a2b")
            page.set_input_files("#file", str(picked))
            page.wait_for_selector("body[data-state=done]")
            assert _natural_size(page, "#output-img") == (36, 28)
            assert page.get_attribute("#download", "download") == "sketch_a2b.png"
            assert page.is_visible("#download")
            downloaded = _fetch_blob(page, "#download")
            assert downloaded.startswith(b"\x89PNG")
            page.screenshot(path=str(tmp_path / "serve_page_a2b.png"), full_page=True)

            # drop a colour image onto the drop zone, translate b2a
            page.select_option("#direction", "b2a")
            page.wait_for_selector("body[data-state=done]")  # re-translated the picked image first
            page.evaluate(
                """([b64, name]) => {
                    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                    const dt = new DataTransfer();
                    dt.items.add(new File([bytes], name, { type: "image/png" }));
                    document.body.dataset.state = "idle";
                    document.getElementById("drop").dispatchEvent(
                        new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
                }""",
                [base64.b64encode(dropped).decode(), "paint.png"],
            )
            page.wait_for_selector("body[data-state=done]")
            assert _natural_size(page, "#output-img") == (20, 44)
            assert page.get_attribute("#download", "download") == "paint_b2a.png"
            page.screenshot(path=str(tmp_path / "serve_page_b2a.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
    assert Path(tmp_path / "serve_page_a2b.png").stat().st_size > 0


@pytest.fixture(scope="module")
def munit_url(tmp_path_factory):
    torch.set_num_threads(1)
    translator = Translator.from_checkpoint(tiny_munit_checkpoint(tmp_path_factory.getbasetemp()), "cpu")
    with serve_in_thread(create_app(translator)) as url:
        yield url


def test_page_gives_another_style_and_a_reference_style(munit_url, tmp_path):
    from playwright.sync_api import sync_playwright

    picked, reference = tmp_path / "sketch.png", tmp_path / "look.png"
    random_image(24, 20, "L", seed=2).save(picked)
    random_image(32, 32, "RGB", seed=3).save(reference)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(munit_url + "/")
            page.wait_for_selector("#another-style", state="visible")  # shown for a multimodal model
            page.select_option("#direction", "a2b")
            page.set_input_files("#file", str(picked))
            page.wait_for_selector("body[data-state=done]")
            first = _fetch_blob(page, "#download")
            assert "style seed 0" in page.text_content("#output-caption")

            outputs = [first]
            for _ in range(2):  # each click: a new random style for the same input
                page.evaluate("document.body.dataset.state = 'idle'")
                page.click("#another-style")
                page.wait_for_selector("body[data-state=done]")
                outputs.append(_fetch_blob(page, "#download"))
                assert _natural_size(page, "#output-img") == (24, 20)
            assert outputs[1] != outputs[0] and outputs[2] != outputs[1], "another style gave the same image"
            assert "style seed" in page.text_content("#output-caption")

            page.evaluate("document.body.dataset.state = 'idle'")
            page.set_input_files("#style-file", str(reference))
            page.wait_for_selector("body[data-state=done]")
            guided = _fetch_blob(page, "#download")
            assert "style of look.png" in page.text_content("#output-caption")
            assert guided not in outputs
            page.screenshot(path=str(tmp_path / "serve_page_munit.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()


def _natural_size(page, selector: str) -> tuple[int, int]:
    w, h = page.eval_on_selector(selector, "img => [img.naturalWidth, img.naturalHeight]")
    return int(w), int(h)


def _fetch_blob(page, selector: str) -> bytes:
    """The bytes behind a link's blob: URL, read inside the page."""
    b64 = page.eval_on_selector(
        selector,
        """async (a) => {
            const buf = new Uint8Array(await (await fetch(a.href)).arrayBuffer());
            let s = ""; for (const b of buf) s += String.fromCharCode(b);
            return btoa(s);
        }""",
    )
    return base64.b64decode(b64)
