"""The web page at / in a real browser (Debian's chromium, headless, driven by Playwright) against `adain serve`.

Needs /usr/bin/chromium (.ci/run installs it with apt); without it the tests are skipped. Set
ADAIN_WEB_SCREENSHOT=docs/web.png to save a screenshot of the page with its result (how docs/web.png was made).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from .service_fixtures import Server, make_key, serve

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SIZE = 256  # the smallest output size the page offers (the server's default is 64 in the tests)
TIMEOUT_MS = 20_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")


def resized(path: Path, size: int) -> tuple[int, int]:
    """(width, height) of an image resized so that its shorter side is ``size`` (as adain.images.resize_shorter)."""
    with Image.open(path) as img:
        w, h = img.size
    long = int(size * max(w, h) / min(w, h))
    return (long, size) if h <= w else (size, long)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, weight_files: dict) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("web")
    with serve(weight_files["vgg16"], tmp / "styles.db", tmp / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, server: Server) -> Iterator[object]:
    """A fresh page on the server's / that records the URLs it asks for and the script errors it hits."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.requested, page.script_errors = [], []
    page.on("request", lambda r: page.requested.append(r.url))
    page.on("pageerror", lambda e: page.script_errors.append(str(e)))
    page.goto(f"{server.url}/")
    yield page
    context.close()


def only_public_api(server: Server, urls: list[str]) -> list[str]:
    """The URLs that are neither the page's own files nor the public API on the server."""
    origin = urlsplit(server.url)
    bad = []
    for url in urls:
        u = urlsplit(url)
        if u.scheme in ("blob", "data"):
            continue
        if (u.scheme, u.netloc) != (origin.scheme, origin.netloc) or not (
                u.path in ("/", "/favicon.ico") or u.path.startswith(
                    ("/static/", "/v1/stylize", "/v1/styles", "/v1/videos"))):
            bad.append(url)
    return bad


def test_stylize_with_an_upload_and_a_stored_style(page, server: Server, content_paths: list[Path],
                                                   style_paths: list[Path]) -> None:
    # A stored style (through the API), so that the library shows its thumbnail; reload to list it.
    stored = style_paths[1]
    r = httpx.post(f"{server.url}/v1/styles", files={"image": (stored.name, stored.read_bytes(), "image/jpeg")},
                   data={"name": "stored one"})
    assert r.status_code == 201, r.text
    page.reload()
    thumb = page.locator("#library-grid img[alt='stored one']")
    thumb.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())

    content = content_paths[0]
    page.set_input_files("#content-input", str(content))
    page.locator("#content-preview").wait_for()
    page.set_input_files("#style-input", str(style_paths[0]))
    thumb.click()
    assert page.locator("#style-list li").count() == 2
    assert page.locator("#status").inner_text() == "Ready."

    sliders = page.locator("#style-list input.weight")
    sliders.nth(1).fill("0.3")  # the stored style's weight
    assert page.locator("#style-list li").nth(1).locator("output").inner_text() == "0.30"
    page.focus("#alpha")
    page.keyboard.press("ArrowLeft")  # a real key press on the alpha slider: 1 -> 0.95
    page.keyboard.press("ArrowLeft")
    assert page.locator("#alpha-value").inner_text() == "0.90"
    page.select_option("#preserve-color", "luminance")
    page.select_option("#content-size", str(SIZE))
    page.select_option("#grain", "0.1")

    held = []  # hold the request to see the pending state, then let it through
    page.route("**/v1/stylize", lambda route: held.append(route))
    page.click("#go")
    page.wait_for_function("() => document.getElementById('go').disabled")
    assert page.locator("#status").get_attribute("class") == "pending"
    assert page.locator("#status").inner_text() == "Stylizing…"
    page.wait_for_function("() => true")  # let the route handler run
    assert len(held) == 1
    body = held[0].request.post_data_buffer or b""
    for name, value in (("alpha", b"0.9"), ("preserve_color", b"luminance"), ("content_size", str(SIZE).encode()),
                        ("weights", b"1"), ("weights", b"0.3"), ("style_id", r.json()["id"].encode()),
                        ("grain", b"0.1")):
        assert f'name="{name}"\r\n\r\n'.encode() + value + b"\r\n" in body, name
    assert f'name="content"; filename="{content.name}"'.encode() in body
    assert f'name="style"; filename="{style_paths[0].name}"'.encode() in body
    held[0].continue_()
    page.unroute("**/v1/stylize")

    result = page.locator("#result")
    result.wait_for()
    natural = "img => img.complete && img.naturalWidth > 0 && [img.naturalWidth, img.naturalHeight]"
    size = page.wait_for_function(natural, arg=result.element_handle()).json_value()
    assert tuple(size) == resized(content, SIZE) == (384, 256)
    status = page.locator("#status").inner_text()
    assert re.fullmatch(r"Done in \d+\.\d\d s \(server: decode \d+ ms, queue \d+ ms, model \d+ ms, encode \d+ ms\)\.",
                        status), status
    assert page.locator("#go").is_enabled()
    assert page.locator("#error").is_hidden()
    download = page.locator("#download")
    assert download.is_visible() and download.get_attribute("href").startswith("blob:")
    assert download.get_attribute("download") == "stylized.png"
    assert only_public_api(server, page.requested) == []
    assert page.script_errors == []
    if os.environ.get("ADAIN_WEB_SCREENSHOT"):
        page.set_viewport_size({"width": 1100, "height": 760})
        page.screenshot(path=os.environ["ADAIN_WEB_SCREENSHOT"], full_page=True)


def result_pixels(page) -> np.ndarray:
    """The RGB pixels of the result image the page shows, read through a canvas in the page."""
    result = page.locator("#result")
    result.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=result.element_handle())
    w, h, rgba = page.evaluate("""img => {
        const canvas = document.createElement('canvas');
        Object.assign(canvas, {width: img.naturalWidth, height: img.naturalHeight});
        const context = canvas.getContext('2d');
        context.drawImage(img, 0, 0);
        return [canvas.width, canvas.height, Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)];
    }""", result.element_handle())
    return np.asarray(rgba, np.uint8).reshape(h, w, 4)[..., :3]


def mean_difference(a: np.ndarray, b: bytes) -> float:
    """Mean absolute difference of RGB pixels and an image file's, in 8-bit levels."""
    with Image.open(io.BytesIO(b)) as other:
        return float(np.abs(a.astype(np.int16) - np.asarray(other.convert("RGB"), np.int16)).mean())


def test_a_mask_goes_to_the_styles_as_the_list_numbers_them_and_the_texture_scale_is_sent(
        page, server: Server, content_paths: list[Path], style_paths: list[Path], tmp_path: Path) -> None:
    stored_path, upload_path = style_paths[2], style_paths[3]
    r = httpx.post(f"{server.url}/v1/styles", data={"name": "picked first"},
                   files={"image": (stored_path.name, stored_path.read_bytes(), "image/jpeg")})
    assert r.status_code == 201, r.text
    page.reload()
    thumb = page.locator("#library-grid img[alt='picked first']")
    thumb.wait_for()
    content = content_paths[0]
    page.set_input_files("#content-input", str(content))
    thumb.click()  # a stored style first, an upload second: the API takes uploads first
    page.set_input_files("#style-input", str(upload_path))
    items = page.locator("#style-list li")
    items.nth(1).wait_for()
    shown = [(items.nth(i).locator(".number").inner_text(), items.nth(i).locator("img").get_attribute("alt"))
             for i in range(2)]
    assert sorted(shown) == [("0", "picked first"), ("1", upload_path.name)] or sorted(shown) == [
        ("0", upload_path.name), ("1", "picked first")], shown
    first = dict(shown)["0"]

    mask = tmp_path / "black.png"  # all label 0, at the output's size: everything goes to the style numbered 0
    Image.new("L", resized(content, SIZE)).save(mask)
    page.set_input_files("#mask-input", str(mask))
    page.select_option("#content-size", str(SIZE))
    page.select_option("#style-scale", "2")
    bodies: list[bytes] = []
    page.route("**/v1/stylize", lambda route: (bodies.append(route.request.post_data_buffer), route.continue_()))
    page.click("#go")
    got = result_pixels(page)
    assert len(bodies) == 1 and b'name="style_scale"\r\n\r\n2\r\n' in bodies[0]
    assert b'name="grain"' not in bodies[0]  # the server's grain unless one is picked

    def alone(path: Path) -> bytes:  # that style alone, through the API, as the page asked
        reply = httpx.post(f"{server.url}/v1/stylize", data={"content_size": str(SIZE), "style_scale": "2"},
                           files=[("content", (content.name, content.read_bytes(), "image/jpeg")),
                                  ("style", (path.name, path.read_bytes(), "image/jpeg"))], timeout=60)
        assert reply.status_code == 200, reply.text
        return reply.content

    numbered_0, other = (stored_path, upload_path) if first == "picked first" else (upload_path, stored_path)
    assert 4 * mean_difference(got, alone(numbered_0)) < mean_difference(got, alone(other))
    assert page.script_errors == []


def test_a_file_that_is_not_an_image_is_flagged_at_once_and_its_failure_clears_the_last_result(
        page, server: Server, content_paths: list[Path], style_paths: list[Path]) -> None:
    bad = {"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": b"just some text, not an image\n" * 10}
    expected = httpx.post(f"{server.url}/v1/stylize",
                          files=[("content", (bad["name"], bad["buffer"], bad["mimeType"])),
                                 ("style", (style_paths[0].name, style_paths[0].read_bytes(), "image/jpeg"))])
    assert expected.status_code == 415
    message = expected.json()["error"]["message"]
    assert message  # e.g. "content: not an image in one of jpeg, png, webp"

    # A result first, with its Download link.
    page.set_input_files("#content-input", str(content_paths[1]))
    page.locator("#content-preview").wait_for()
    page.set_input_files("#style-input", str(style_paths[0]))
    page.select_option("#content-size", str(SIZE))
    page.click("#go")
    page.locator("#download").wait_for()
    assert page.locator("#result").is_visible()

    # Picking a file that is not an image says so at once, in the drop box and in red, before Stylize.
    page.set_input_files("#content-input", files=[bad])
    error = page.locator("#error")
    error.wait_for()
    assert error.inner_text() == "photo.jpg does not look like an image; choose a photo (JPEG, PNG or WebP)."
    assert page.locator("#content-preview").is_hidden()
    assert page.locator("#content-hint").inner_text().startswith("photo.jpg: not an image this browser can show.")

    # The server has the last word; its refusal replaces the message and clears the earlier result.
    page.click("#go")
    page.wait_for_function("() => document.getElementById('status').textContent === 'Failed.'")
    assert error.inner_text() == f"{message} (415)"
    assert page.locator("#result").is_hidden() and page.locator("#download").is_hidden()
    assert page.locator("#download").get_attribute("href") is None
    assert page.locator("#go").is_enabled()
    assert page.script_errors == []


def test_the_page_icon_is_served(page, server: Server) -> None:
    # The browser fetches icons itself, out of Playwright's sight: fetch the page's declared icon from the page.
    href = page.evaluate("() => document.querySelector('link[rel=icon]').href")
    assert urlsplit(href).path == "/favicon.ico"  # where browsers look without the link too
    got = page.evaluate("async (url) => { const r = await fetch(url); "
                        "return [r.status, r.headers.get('content-type'), (await r.arrayBuffer()).byteLength]; }", href)
    icon_bytes = httpx.get(href).content
    assert got == [200, "image/x-icon", len(icon_bytes)]
    with Image.open(io.BytesIO(icon_bytes)) as icon:
        assert icon.format == "ICO" and {(16, 16), (32, 32)} <= icon.info["sizes"]


def test_phone_sized_layout_has_no_horizontal_overflow(browser, server: Server, content_paths: list[Path],
                                                        style_paths: list[Path], tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/")
        long_name = tmp_path / ("a-style-with-a-very-long-file-name-that-does-not-break-" * 2 + ".jpg")
        long_name.write_bytes(style_paths[0].read_bytes())
        page.set_input_files("#content-input", str(content_paths[1]))
        page.set_input_files("#style-input", str(long_name))
        page.locator("#style-list li").wait_for()
        page.locator("#content-preview").wait_for()
        widths = page.evaluate("""() => ({
            page: document.documentElement.scrollWidth, view: document.documentElement.clientWidth,
            widest: Math.max(...[...document.querySelectorAll('body *')].map(e => e.getBoundingClientRect().right)),
            panels: [...document.querySelectorAll('.panel')].map(e => Math.round(e.getBoundingClientRect().width)),
        })""")
        assert widths["view"] == 390
        assert widths["page"] <= widths["view"], widths
        assert widths["widest"] <= widths["view"] + 0.5, widths
        assert len(set(widths["panels"])) == 1 and widths["panels"][0] > 300, widths  # one column, full width
    finally:
        context.close()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, weight_files: dict) -> Iterator[tuple[Server, str]]:
    """A server with API keys, and a write key for it."""
    tmp = tmp_path_factory.mktemp("web-keys")
    key, line = make_key("painter", "write")
    keys = tmp / "keys"
    keys.write_text(line + "\n")
    with serve(weight_files["vgg16"], tmp / "styles.db", tmp / "server.log", "--api-keys", str(keys)) as running:
        yield running, key


def test_with_api_keys_the_page_sends_the_key_it_is_given_and_keeps_it(
        browser, keyed_server: tuple[Server, str], content_paths: list[Path], style_paths: list[Path]) -> None:
    server, key = keyed_server
    stored = httpx.post(f"{server.url}/v1/styles", headers={"Authorization": f"Bearer {key}"},
                        files={"image": (style_paths[1].name, style_paths[1].read_bytes(), "image/jpeg")},
                        data={"name": "mine"})
    assert stored.status_code == 201, stored.text
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        requested, script_errors = [], []
        page.on("request", lambda r: requested.append(r.url))
        page.on("pageerror", lambda e: script_errors.append(str(e)))
        page.goto(f"{server.url}/")
        error = page.locator("#error")
        error.wait_for()  # no key yet: the library cannot be listed, and the page says why
        assert "This server needs an API key" in error.inner_text()
        assert page.locator("#library-grid img").count() == 0

        page.fill("#api-key", key)
        page.press("#api-key", "Tab")  # the field's change: the library is listed with the key
        thumb = page.locator("#library-grid img[alt='mine']")
        thumb.wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
        assert error.is_hidden()
        page.set_input_files("#content-input", str(content_paths[0]))
        page.locator("#content-preview").wait_for()
        thumb.click()
        page.select_option("#content-size", str(SIZE))
        with page.expect_request("**/v1/stylize") as sent:
            page.click("#go")
        assert sent.value.all_headers()["authorization"] == f"Bearer {key}"
        page.locator("#download").wait_for()
        assert page.locator("#result").is_visible() and error.is_hidden()

        stored_key = "() => [sessionStorage.getItem('adain-api-key'), localStorage.getItem('adain-api-key')]"
        assert page.evaluate(stored_key) == [key, None]  # this tab only, unless remembered
        page.reload()
        assert page.input_value("#api-key") == key
        page.locator("#library-grid img[alt='mine']").wait_for()
        page.check("#remember-key")
        assert page.evaluate(stored_key) == [None, key]
        other = context.new_page()  # a new tab of the same browser
        other.goto(f"{server.url}/")
        assert other.input_value("#api-key") == key and other.is_checked("#remember-key")
        assert only_public_api(server, requested) == [] and script_errors == []
    finally:
        context.close()


def test_a_video_shows_its_progress_then_plays(page, server: Server, content_paths: list[Path],
                                               style_paths: list[Path], tmp_path: Path) -> None:
    """The Video panel: a clip and an uploaded style, the job's progress bar, then the result in the player."""
    from adain.images import read_image
    from adain.video.motion import camera_clip, write_clip

    clip = tmp_path / "pan.mp4"
    write_clip(camera_clip(read_image(content_paths[0]), "pan", (64, 96), 12).frames, clip)
    page.click("#go-video")
    assert page.locator("#video-error").inner_text() == "Choose a clip first."
    page.set_input_files("#video-input", str(clip))
    page.set_input_files("#style-input", str(style_paths[0]))
    page.select_option("#content-size", str(SIZE))
    page.select_option("#stability", "3")
    page.click("#go-video")
    page.locator("#video-progress").wait_for()
    player = page.locator("#video-result")
    player.wait_for(timeout=120_000)
    assert page.locator("#video-status").inner_text() == "Done: 12 frames."
    assert page.locator("#video-progress").evaluate("p => p.value") == 1
    assert page.locator("#cancel-video").is_hidden() and not page.locator("#go-video").is_disabled()
    duration = player.evaluate("v => new Promise((done) => v.readyState >= 1 ? done(v.duration) : ("
                               "v.addEventListener('loadedmetadata', () => done(v.duration)),"
                               " v.addEventListener('error', () => done(-1))))")
    assert abs(duration - 0.5) < 0.05  # 12 frames at 24 fps, read by the browser's own decoder
    assert only_public_api(server, page.requested) == [] and page.script_errors == []
