"""The listening page: safe file names, escaping, relative links, spectrogram PNGs."""
import os

import matplotlib.image
import numpy as np
import pytest

from musiclm_jax.inference import listening_page


@pytest.mark.parametrize("clip_id", ["../evil", "a/b", "/etc/passwd", "..", ".hidden", "",
                                     "café ☕", "x" * 500, "a\\b", "con:1", "a\nb"])
def test_a_safe_stem_names_a_plain_file_inside_the_folder(clip_id, tmp_path):
  stem = listening_page.safe_stem(clip_id)
  assert stem and not stem.startswith(".") and len(stem) <= 100
  assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in stem)
  path = os.path.realpath(tmp_path / (stem + ".wav"))
  assert os.path.dirname(path) == os.path.realpath(tmp_path)


def test_distinct_ids_get_distinct_stems_and_plain_ids_keep_theirs():
  ids = ["a/b", "a_b", "a?b", "a b", "café", "cafe", "A", "x" * 200, "x" * 201]
  stems = [listening_page.safe_stem(i) for i in ids]
  assert len(set(stems)) == len(ids)
  assert listening_page.safe_stem("a_b") == "a_b"
  assert listening_page.safe_stem("clip-7.v2") == "clip-7.v2"
  assert listening_page.safe_stem("a/b") == listening_page.safe_stem("a/b")  # stable: resumable


def test_spectrogram_is_a_png_even_for_silence(tmp_path):
  rate = 16000
  t = np.arange(rate) / rate
  for name, wav in (("tone.png", np.sin(2 * np.pi * 440 * t)), ("silence.png", np.zeros(rate)),
                    ("short.png", np.ones(100))):
    listening_page.write_spectrogram(wav, rate, str(tmp_path / name))
    image = matplotlib.image.imread(tmp_path / name)
    assert image.shape[0] > 50 and image.shape[1] > 100
  assert sorted(os.listdir(tmp_path)) == ["short.png", "silence.png", "tone.png"]


def _record(clip_id, text):
  stem = listening_page.safe_stem(clip_id)
  return {"id": clip_id, "text": text, "file": stem + ".wav", "spectrogram": stem + ".png",
          "seconds": 1.0}


def test_page_escapes_captions_and_ids_and_links_relative_files(tmp_path):
  records = [_record("x", '<script>alert("boo")</script> & friends'),
             _record("<b>", "plain piano")]
  path = listening_page.write_page(str(tmp_path), records, title="<i>demo</i>")
  page = open(path, encoding="utf-8").read()
  assert "<script>" not in page and "<b>" not in page and "<i>" not in page
  assert "&lt;script&gt;alert(&quot;boo&quot;)&lt;/script&gt; &amp; friends" in page
  assert page.count("<audio") == 2 and page.count("<img") == 2
  assert 'src="x.wav"' in page and 'src="x.png"' in page
  assert "://" not in page.split("<body>")[1]  # only relative links: it opens from disk
  assert "metrics.md" not in page


def test_page_links_the_metrics_when_they_exist(tmp_path):
  (tmp_path / "metrics.md").write_text("| FAD | 1.0 |\n")
  page = open(listening_page.write_page(str(tmp_path), [_record("a", "t")])).read()
  assert 'href="metrics.md"' in page
