"""The listening page in a real browser: headless Chromium (Debian `chromium` +
`chromium-driver`) opens index.html from disk; every player loads its wav, every spectrogram
decodes, and a caption holding `<script>` is shown as text, never run."""
import os
import time

import numpy as np
import pytest
import soundfile as sf

from musiclm_jax.inference import listening_page

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
RATE = 16000
EVIL = '<script>window.pwned = true;</script><img src=x onerror="window.pwned = true">'
CLIPS = [("../evil", EVIL + " calm piano", 1.0), ("a/b", "loud drums", 0.5),
         ("café ☕", "jazz trio & friends", 0.25)]


# Set by .ci/run: there a missing browser fails the suite instead of skipping these tests.
REQUIRE_BROWSER = "MUSICLM_REQUIRE_BROWSER"


def _require_browser(paths=(CHROMIUM, CHROMEDRIVER)):
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    message = (f"no headless browser: {missing} missing (apt-get install chromium "
               "chromium-driver)")
    if os.environ.get(REQUIRE_BROWSER) == "1":
      pytest.fail(f"{message}, and {REQUIRE_BROWSER}=1 requires it")
    pytest.skip(message)


def test_ci_requires_the_browser_a_missing_one_fails(monkeypatch):
  ci = open(os.path.join(os.path.dirname(__file__), "..", "..", ".ci", "run")).read()
  assert f"export {REQUIRE_BROWSER}=1" in ci
  monkeypatch.setenv(REQUIRE_BROWSER, "1")
  with pytest.raises(pytest.fail.Exception, match="chromium"):
    _require_browser(("/nonexistent/chromium",))
  monkeypatch.delenv(REQUIRE_BROWSER)
  with pytest.raises(pytest.skip.Exception):
    _require_browser(("/nonexistent/chromium",))


def _driver(profile_dir):
  _require_browser()
  from selenium import webdriver  # pylint: disable=import-outside-toplevel
  from selenium.webdriver.chrome.service import Service  # pylint: disable=import-outside-toplevel
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
               "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile_dir}"):
    options.add_argument(flag)
  # An explicit driver path: selenium-manager never tries to download one.
  return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
  """A folder as text_to_audio writes it (tones instead of a model's clips)."""
  folder = tmp_path_factory.mktemp("generations")
  records = []
  for i, (clip_id, text, seconds) in enumerate(CLIPS):
    stem = listening_page.safe_stem(clip_id)
    t = np.arange(int(seconds * RATE)) / RATE
    wav = 0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t)
    sf.write(folder / f"{stem}.wav", wav, RATE, subtype="PCM_16")
    listening_page.write_spectrogram(wav, RATE, str(folder / f"{stem}.png"))
    records.append({"id": clip_id, "text": text, "file": f"{stem}.wav",
                    "spectrogram": f"{stem}.png", "seconds": seconds})
  return listening_page.write_page(str(folder), records)


@pytest.fixture(scope="module")
def browser(page, tmp_path_factory):
  driver = _driver(tmp_path_factory.mktemp("chromium-profile"))
  try:
    driver.get("file://" + page)
    yield driver
  finally:
    driver.quit()


def _wait_for(driver, script, timeout=30.0):
  deadline = time.time() + timeout
  while True:
    value = driver.execute_script(script)
    if value or time.time() > deadline:
      return value
    time.sleep(0.1)


def test_every_audio_player_loads_its_file(browser):
  ready = _wait_for(browser, """
      const players = [...document.querySelectorAll('audio')];
      return players.length && players.every(a => a.readyState >= 1 && a.duration > 0);""")
  state = browser.execute_script("""
      return [...document.querySelectorAll('audio')].map(a => ({
        src: a.currentSrc, ready: a.readyState, duration: a.duration,
        error: a.error && a.error.code}));""")
  assert ready, state
  assert len(state) == len(CLIPS)
  for player, (_, _, seconds) in zip(state, CLIPS):
    assert player["error"] is None
    assert player["duration"] == pytest.approx(seconds, abs=0.02)


def test_every_spectrogram_decodes(browser):
  decoded = _wait_for(browser, """
      const images = [...document.querySelectorAll('img')];
      return images.length && images.every(i => i.complete && i.naturalWidth > 0);""")
  sizes = browser.execute_script(
      "return [...document.querySelectorAll('img')].map(i => [i.naturalWidth, i.naturalHeight]);")
  assert decoded, sizes
  assert len(sizes) == len(CLIPS) and all(w > 100 and h > 50 for w, h in sizes)


def test_a_caption_with_markup_is_shown_as_text_and_never_runs(browser):
  captions = browser.execute_script(
      "return [...document.querySelectorAll('td.caption')].map(c => c.textContent);")
  assert captions == [text for _, text, _ in CLIPS]
  assert browser.execute_script("return window.pwned === undefined;")
  assert browser.execute_script("return document.querySelectorAll('td script').length;") == 0

