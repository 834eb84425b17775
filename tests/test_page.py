"""The page at ``/`` in a real browser: Playwright driving Debian's chromium against the real
bridge (--activate, tiny models). Its own browser download cannot work offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
import soundfile as sf
from playwright import sync_api as playwright_api

from qwen3ttsd.engine.engine import frame_budget

from .test_bridge import Bridge, _ref_wav

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
# The docs' screenshot is refreshed only on request, so a test run never dirties the checkout.
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "page.png"
UPDATE_SCREENSHOT = os.environ.get("QWEN3TTSD_UPDATE_SCREENSHOT") == "1"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run `make system-deps` as root (apt install chromium)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def bridge(tiny_models, tmp_path_factory):
    b = Bridge(tmp_path_factory.mktemp("page"), tiny_models["custom_voice"].parent)
    yield b
    b.stop()


def open_page(browser, url: str, loaded: bool = True):
    """The page and the console errors it logs; ``loaded``: wait until the status has come."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url + "/")
    if loaded:
        page.wait_for_function("document.getElementById('voice').options.length > 0")
    return page, problems


def spoken(page) -> None:
    """Wait until the page has played everything it was sent."""
    page.wait_for_function("document.getElementById('stat-state').textContent === 'done'", timeout=120_000)


def add_voice(page, name: str, clip: Path, consent: str, transcript: str = "") -> None:
    page.fill("#voice-name", name)
    page.set_input_files("#voice-file", str(clip))
    page.fill("#voice-transcript", transcript)
    page.fill("#voice-consent", consent)
    page.check("#voice-consent-ok")
    page.click("#voice-add")


def test_page_speaks_and_manages_voices(bridge, browser, tmp_path):
    page, problems = open_page(browser, bridge.url)
    assert page.title() == "qwen3ttsd"
    assert problems == []
    assert "ryan" in page.locator("#voice").inner_text()
    assert page.locator("#daemon-pill").inner_text() == "daemon idle (not running)"
    # neither the page and its status panel, nor an explicit refresh while it is idle, woke it
    st = httpx.get(bridge.url + "/v1/status?refresh=1").json()
    assert st["daemon"]["running"] is False and st["daemon"]["speakers"][0] == "vivian"
    assert bridge.health()["daemon"]["spawns"] == 0

    # Speak: pcm16 over the WebSocket into the AudioWorklet
    text = "Hello from the browser."
    page.fill("#text", text)
    page.select_option("#voice", "aiden")
    page.click("#speak-btn")
    spoken(page)
    audio = page.evaluate("window.qwen3tts.audio")
    samples = frame_budget(text) * 1920
    assert audio == {"received": samples, "played": samples}  # every sample went through the graph
    assert page.locator("#stat-first").inner_text().endswith(" ms")
    assert "realtime" in page.locator("#stat-rt").inner_text()
    with page.expect_download() as dl:
        page.click("#download-btn")
    wav = Path(dl.value.path()).read_bytes()
    assert wav[:4] == b"RIFF" and len(wav) == 44 + 2 * samples

    # the status panel now knows the daemon runs (from the activator, without asking it)
    page.click("#refresh-btn")
    page.wait_for_function("document.getElementById('st-models').textContent.includes('custom_voice')")
    assert page.locator("#daemon-pill").inner_text() == "daemon running"

    # voice library: upload a clip, it is listed, preview it, delete it
    clip = tmp_path / "grandpa.wav"
    clip.write_bytes(_ref_wav(3))
    add_voice(page, "grandpa", clip, "recorded with his permission", "Hello there.")
    page.wait_for_selector("li[data-voice=grandpa]", timeout=120_000)
    assert "grandpa" in page.locator("#voice").inner_text()
    page.click("li[data-voice=grandpa] >> text=Preview")
    spoken(page)
    page.fill("#text", text)
    shot = SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.once("dialog", lambda d: d.accept())
    page.click("li[data-voice=grandpa] >> text=Delete")
    page.wait_for_selector("li[data-voice=grandpa]", state="detached", timeout=60_000)
    assert httpx.get(bridge.url + "/v1/audio/voices/grandpa").status_code == 404

    # a bad clip gets the server's message, not a silent failure
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio" * 100)
    add_voice(page, "broken", bad, "yes")
    page.wait_for_selector("#voice-error:not([hidden])", timeout=60_000)
    assert "audio" in page.locator("#voice-error").inner_text()

    # record from the microphone (Chromium's fake device: beeps) and save it as a voice
    page.set_input_files("#voice-file", [])
    page.click("#record-btn")
    page.wait_for_timeout(4000)
    page.click("#record-btn")
    page.wait_for_function("window.qwen3tts.recorded && window.qwen3tts.recorded.size > 0")
    page.fill("#voice-name", "mic")
    page.fill("#voice-consent", "my own voice")
    page.check("#voice-consent-ok")
    page.click("#voice-add")
    page.wait_for_selector("li[data-voice=mic]", timeout=120_000)
    assert problems == [] or all("400" in p for p in problems), problems  # only the bad clip's 400


def test_page_with_an_api_key(tiny_models, tmp_path, browser):
    b = Bridge(tmp_path, tiny_models["custom_voice"].parent, args=["--api-key", "s3cret"])
    try:
        assert httpx.get(b.url + "/v1/status").status_code == 401
        page, _ = open_page(browser, b.url, loaded=False)
        page.wait_for_selector("#status-error:not([hidden])")
        assert "API key" in page.locator("#status-error").inner_text()
        page.fill("#api-key", "s3cret")
        page.dispatch_event("#api-key", "change")
        page.wait_for_function("document.getElementById('voice').options.length > 0")
        page.fill("#text", "Secret.")
        page.click("#speak-btn")
        spoken(page)
        assert page.evaluate("window.qwen3tts.audio.played") == frame_budget("Secret.") * 1920
    finally:
        b.stop()



# --- issue 20: 390 px, warm-up on focus, downloads of what was heard, designed voices ---------

BROKEN_WORDS = """() => {
  const bad = [];
  for (const el of document.querySelectorAll("dl dt, dl dd")) {
    const node = el.firstChild;
    if (!node || node.nodeType !== Node.TEXT_NODE) continue;
    let at = 0;
    for (const word of node.textContent.split(/(\\s+)/)) {
      if (word.trim()) {
        const r = document.createRange();
        r.setStart(node, at);
        r.setEnd(node, at + word.length);
        if (new Set([...r.getClientRects()].map((x) => Math.round(x.top))).size > 1) bad.push(word);
      }
      at += word.length;
    }
  }
  return bad;
}"""


def test_page_at_390px_breaks_no_word_and_never_scrolls_sideways(bridge, browser):
    page, problems = open_page(browser, bridge.url)
    page.set_viewport_size({"width": 390, "height": 844})
    for state in ("idle", "waiting for the first audio (the daemon may be starting)"):
        page.evaluate("s => { document.getElementById('stat-state').textContent = s; }", state)
        page.evaluate("() => { document.getElementById('st-models').textContent = 'custom_voice, voice_design'; }")
        assert page.evaluate(BROKEN_WORDS) == [], state
        width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert width[0] <= width[1] == 390, width
    assert problems == []


def test_page_warms_on_focus_downloads_what_was_heard_and_designs_voices(tiny_models, tmp_path, browser):
    b = Bridge(tmp_path, tiny_models["custom_voice"].parent)
    try:
        page, problems = open_page(browser, b.url)
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url.split("?")[0]) if r.method == "POST" else None)
        page.wait_for_timeout(1500)
        assert b.health()["daemon"]["spawns"] == 0 and posts == []  # never warmed on page load
        page.focus("#text")
        page.wait_for_function("window.qwen3tts.warm.state === 'ready'", timeout=120_000)
        warm = page.evaluate("window.qwen3tts.warm.result")
        assert warm["model"] == "custom_voice" and warm["already_loaded"] is False
        assert b.health()["daemon"]["spawns"] == 1
        page.focus("#voice")
        page.focus("#text")  # focused again soon after: no second warm-up
        assert posts == [b.url + "/v1/audio/warmup"]

        # Download in another format: the heard audio, encoded (no second synthesis)
        text = "Download what you heard."
        page.fill("#text", text)
        page.click("#speak-btn")
        spoken(page)
        heard = frame_budget(text) * 1920
        assert page.evaluate("window.qwen3tts.audio.played") == heard
        for fmt in ("mp3", "flac"):
            page.select_option("#format", fmt)
            with page.expect_download() as dl:
                page.click("#download-btn")
            y, sr = sf.read(dl.value.path(), dtype="float32")
            assert sr == 24000 and len(y) == heard, (fmt, len(y), heard)  # mp3 too: its exact length
        assert b.url + "/v1/audio/speech" not in posts
        assert posts.count(b.url + "/v1/audio/encode") == 2

        # Design a voice from a description, then speak with it
        page.fill("#design-name", "captain")
        page.fill("#design-prompt", "A gravelly old sea captain.")
        page.fill("#design-script", "Ahoy there, and welcome aboard my ship.")
        page.click("#design-btn")
        page.wait_for_selector("li[data-voice=captain]", timeout=180_000)
        assert "captain" in page.locator("#voice").inner_text()
        page.select_option("#voice", "captain")
        page.fill("#text", "Aye.")
        page.click("#speak-btn")
        spoken(page)
        assert page.evaluate("window.qwen3tts.audio.played") == frame_budget("Aye.") * 1920
        # a refusal shows the server's message
        page.fill("#design-name", "ryan")
        page.fill("#design-prompt", "calm")
        page.click("#design-btn")
        page.wait_for_selector("#design-error:not([hidden])", timeout=60_000)
        assert "built-in" in page.locator("#design-error").inner_text()
        assert all("400" in p for p in problems), problems
    finally:
        b.stop()
