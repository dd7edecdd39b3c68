"""A CLU metric writer that appends one plain-text line per step: greppable, diffable."""
import json
import time

from clu import metric_writers
from etils import epath


class TextFileWriter(metric_writers.MetricWriter):
  """`{"step": 10, "time": ..., "train/loss": 2.3, ...}` per line, for scalars and hparams."""

  def __init__(self, path):
    self._path = epath.Path(path)
    self._path.parent.mkdir(parents=True, exist_ok=True)
    self._file = self._path.open("a")

  def _line(self, record):
    self._file.write(json.dumps(record, sort_keys=True) + "\n")

  def write_scalars(self, step, scalars):
    self._line({"step": int(step), "time": round(time.time(), 3),
                **{k: float(v) for k, v in scalars.items()}})

  def write_hparams(self, hparams):
    self._line({"hparams": {k: str(v) for k, v in hparams.items()}})

  # Summaries, images, audio, histograms and texts go to TensorBoard only.
  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()
