"""A listening page for a folder of generated clips: `index.html`, one row per clip.

Each row shows the caption (HTML-escaped: captions are user text), an `<audio>` player and a
spectrogram PNG, all referenced by relative URLs so the folder opens from disk (file://) or
from any static file server, and can be copied elsewhere whole. File names come from
`safe_stem`, which keeps an id from naming anything outside the folder.
"""
import hashlib
import html
import os
import re
import urllib.parse
from typing import Iterable, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from musiclm_jax.core import files

PAGE = "index.html"
METRICS_PAGE = "metrics.md"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_STEM = 80


def safe_stem(clip_id: str) -> str:
  """A file-name stem for `clip_id`: ASCII letters, digits, `_ . -`, no leading dot, at most
  ~90 characters. An id that needed changes gets a hash of the original appended, so distinct
  ids (`a/b`, `a_b`, `a?b`) never share a file."""
  clip_id = str(clip_id)
  cleaned = _UNSAFE.sub("_", clip_id).lstrip(".")[:_MAX_STEM]
  if cleaned == clip_id and cleaned:
    return cleaned
  digest = hashlib.sha1(clip_id.encode("utf-8")).hexdigest()[:10]
  return f"{cleaned}-{digest}" if cleaned else digest


def write_spectrogram(wav: np.ndarray, sample_rate: int, path: str) -> None:
  """A log-power spectrogram of mono `wav [samples]` as a PNG (written atomically)."""
  figure = Figure(figsize=(6, 1.8), dpi=100)
  FigureCanvasAgg(figure)
  axes = figure.add_axes((0.08, 0.22, 0.9, 0.72))
  wav = np.asarray(wav, np.float64)
  n_fft = 512 if wav.size >= 512 else max(16, 2 ** int(np.log2(max(wav.size, 16))))
  # A faint fixed dither keeps every bin's log finite: silence and pure DC still draw.
  wav = wav + 1e-7 * np.random.default_rng(0).standard_normal(wav.size)
  axes.specgram(wav, NFFT=n_fft, Fs=sample_rate, noverlap=n_fft * 3 // 4,
                cmap="magma")
  axes.set_xlabel("seconds", fontsize=7)
  axes.set_ylabel("Hz", fontsize=7)
  axes.tick_params(labelsize=6)
  with files.atomic_path(path, suffix=".png") as tmp:
    figure.savefig(tmp, format="png")


def _url(name: str) -> str:
  return html.escape(urllib.parse.quote(name), quote=True)


def _row(record: Mapping) -> str:
  text = html.escape(str(record.get("text", "")))
  clip_id = html.escape(str(record["id"]))
  details = f"{record.get('seconds', 0):.2f} s"
  if record.get("mulan_score") is not None:
    details += f", MuLan score {record['mulan_score']:.3f}"
  image = ""
  if record.get("spectrogram"):
    image = (f'<img src="{_url(record["spectrogram"])}" alt="spectrogram of {clip_id}" '
             'width="600" height="180">')
  return (f'<tr id="clip-{_url(record["file"])}">'
          f'<td class="id">{clip_id}</td><td class="caption">{text}</td>'
          f'<td>{details}<br><audio controls preload="auto" src="{_url(record["file"])}">'
          f'</audio></td><td>{image}</td></tr>')


def write_page(output_dir: str, records: Iterable[Mapping],
               title: str = "MusicLM generations") -> str:
  """Writes `output_dir/index.html` (atomically) for `records` (as in generations.jsonl:
  id, text, file, seconds, spectrogram, optional mulan_score); links metrics.md when the
  folder has one. Returns the page's path."""
  records = list(records)
  metrics = ""
  if os.path.exists(os.path.join(output_dir, METRICS_PAGE)):
    metrics = f'<p><a href="{_url(METRICS_PAGE)}">Metrics of these clips</a></p>'
  rows = "\n".join(_row(r) for r in records)
  page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.4em; vertical-align: top; }}
td.caption {{ max-width: 28em; white-space: pre-wrap; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(records)} clips.</p>
{metrics}
<table>
<tr><th>id</th><th>caption</th><th>audio</th><th>spectrogram</th></tr>
{rows}
</table></body></html>
"""
  path = os.path.join(output_dir, PAGE)
  files.write_text(path, page)
  return path
