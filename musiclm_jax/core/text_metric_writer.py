"""A CLU metric writer that appends one plain-text line per step: greppable, diffable."""
import json
import time
from typing import Optional

from clu import metric_writers
from etils import epath


class TextFileWriter(metric_writers.MetricWriter):
  """`{"step": 10, "time": ..., "train/loss": 2.3, ...}` per line, for scalars and hparams."""

  def __init__(self, path, resume_step: Optional[int] = None):
    """resume_step: the step a resumed run restarts from. Lines of later steps, written by
    the run that stopped after its last checkpoint, are dropped so no step appears twice."""
    self._path = epath.Path(path)
    self._path.parent.mkdir(parents=True, exist_ok=True)
    if resume_step is not None and self._path.exists():
      self._truncate_after(resume_step)
    self._file = self._path.open("a")

  def _truncate_after(self, step: int):
    kept = []
    for line in self._path.read_text().splitlines(keepends=True):
      try:
        record = json.loads(line)
      except json.JSONDecodeError:  # a line cut short by a kill
        continue
      if record.get("step", step) <= step:
        kept.append(line if line.endswith("\n") else line + "\n")
    # Written beside and renamed over: a kill now leaves the old file or the new, whole.
    partial = self._path.parent / (self._path.name + ".tmp")
    partial.write_text("".join(kept))
    partial.replace(self._path)

  def _line(self, record):
    # Flushed per line: a killed run keeps every line it logged before its last checkpoint.
    self._file.write(json.dumps(record, sort_keys=True) + "\n")
    self._file.flush()

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
