"""musicnn (Pons & Serra, 2019): a music auto-tagger, in Flax, with the released weights.

The `musicnn` package (ISC licence) ships TF1 checkpoints trained on MagnaTagATune
(`MTT_musicnn`) and the Million Song Dataset (`MSD_musicnn`): 50 tags each, 16 kHz input,
96-band log-mel patches of 3 s. It gives this repository an offline music embedder for FAD
and a tag classifier for KL (`metrics/embedders.musicnn_embedder`).

  tagger = MusicnnTagger.load("MTT_musicnn")          # musicnn_weights reads the checkpoint
  tagger.outputs(wav16k_windows)                      # {"logits" [n, 50], "penultimate" [n, 200], ...}
  tagger.taggram(wav16k)                              # sigmoid tags per 3 s patch, as musicnn

Network (musicnn's `build_musicnn`, eval mode): batch-norm on the log-mel; a front end of
timbral convs (7 x 38 and 7 x 67 over time x mel) and temporal convs (128, 64, 32 x 1), each
max-pooled over frequency; a mid end of three 1-D convs over time (kernel 7, 64 filters, the
last two residual), densely concatenated; a back end of max and mean pooling over time, a
200-unit dense layer ("penultimate") and the 50 tag logits. Submodule names are the TF1
variable scopes, so the checkpoint maps onto the parameters one to one.
"""
import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.core import audio

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187          # musicnn's 3 s input: librosa.time_to_frames(3, ...) + 1
# A window of this many samples gives exactly PATCH_FRAMES centred STFT frames.
WINDOW_SAMPLES = (PATCH_FRAMES - 1) * HOP
BN_EPS = 1e-3               # tf.compat.v1.layers.batch_normalization's default


def log_mel(wav) -> jnp.ndarray:
  """float `[batch, samples]` at 16 kHz -> `[batch, frames, 96]` musicnn input.

  As musicnn's `batch_data`: librosa's power mel (n_fft 512, hop 256, Slaney, reflect-padded
  frames as in the librosa it was trained with), rounded to float16, then log10(10000 x + 1).
  One departure: `batch_data` also does the log in float16 arithmetic, where 10000 x
  overflows to inf for any mel bin above 6.55 (loud music) and the result keeps ~3 digits;
  here the log is taken in float32 after the rounding.
  """
  power = jnp.abs(audio.stft(jnp.asarray(wav, jnp.float32), N_FFT, HOP)) ** 2
  mel = power @ audio.mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS)
  mel = mel.astype(jnp.float16).astype(jnp.float32)
  return jnp.log10(10000.0 * mel + 1.0)


def _batch_norm(name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name=name)


class Musicnn(nn.Module):
  """`[batch, 187, 96]` log-mel patches -> {"logits", "penultimate", "mean_pool", "max_pool"}."""
  num_classes: int = 50
  midend_filters: int = 64
  backend_units: int = 200

  @nn.compact
  def __call__(self, x):
    x = _batch_norm("batch_normalization")(x[..., None])            # [b, t, mel, 1]
    num_mels = x.shape[2]
    padded = jnp.pad(x, ((0, 0), (3, 3), (0, 0), (0, 0)))
    frontend = []
    # Creation order in musicnn fixes the TF names: f74, f77, then the temporal convs.
    specs = [(padded, (7, int(0.4 * num_mels)), 204, "VALID"),
             (padded, (7, int(0.7 * num_mels)), 204, "VALID"),
             (x, (128, 1), 51, "SAME"), (x, (64, 1), 51, "SAME"), (x, (32, 1), 51, "SAME")]
    for i, (inputs, kernel, filters, padding) in enumerate(specs):
      y = nn.relu(nn.Conv(filters, kernel, padding=padding,
                          name="conv2d" + (f"_{i}" if i else ""))(inputs))
      y = _batch_norm(f"batch_normalization_{i + 1}")(y)
      frontend.append(jnp.max(y, axis=2))                            # pool over all mels
    features = [jnp.concatenate(frontend, axis=-1)]                  # [b, t, 561]
    hidden = features[0]
    for i in range(3):
      y = nn.relu(nn.Conv(self.midend_filters, (7,), padding=((3, 3),),
                          name=f"conv2d_{5 + i}")(hidden))
      y = _batch_norm(f"batch_normalization_{6 + i}")(y)
      hidden = y if i == 0 else y + hidden
      features.append(hidden)
    features = jnp.concatenate(features, axis=-1)                    # [b, t, 753]
    max_pool = jnp.max(features, axis=1)
    mean_pool = jnp.mean(features, axis=1)
    # TF flattened concat([max, mean], axis=2) of [b, 753, 1] each: interleaved per feature.
    pooled = jnp.stack([max_pool, mean_pool], axis=-1).reshape(features.shape[0], -1)
    pooled = _batch_norm("batch_normalization_9")(pooled)
    penultimate = nn.relu(nn.Dense(self.backend_units, name="dense")(pooled))
    penultimate = _batch_norm("batch_normalization_10")(penultimate)
    logits = nn.Dense(self.num_classes, name="dense_1")(penultimate)
    return {"logits": logits, "penultimate": penultimate, "mean_pool": mean_pool,
            "max_pool": max_pool}


@dataclasses.dataclass
class MusicnnTagger:
  """A musicnn network with its variables (`{"params", "batch_stats"}`) and tag names."""
  name: str
  variables: dict
  labels: Sequence[str]
  sample_rate: int = SAMPLE_RATE
  window_samples: int = WINDOW_SAMPLES

  def __post_init__(self):
    self.network = Musicnn(num_classes=len(self.labels))
    self._apply = jax.jit(lambda variables, wav: self.network.apply(variables, log_mel(wav)))
    self._apply_patches = jax.jit(self.network.apply)

  @classmethod
  def load(cls, model: str = "MTT_musicnn", checkpoint_dir=None) -> "MusicnnTagger":
    from musiclm_jax.evaluation import musicnn_weights  # pylint: disable=import-outside-toplevel
    variables, labels = musicnn_weights.load(model, checkpoint_dir)
    return cls(model, variables, labels)

  def outputs(self, windows) -> dict:
    """float `[n, WINDOW_SAMPLES]` 16 kHz windows -> numpy outputs per window."""
    windows = np.asarray(windows, np.float32)
    if windows.ndim != 2 or windows.shape[1] != self.window_samples:
      raise ValueError(f"musicnn takes windows [n, {self.window_samples}] at "
                       f"{self.sample_rate} Hz, got shape {windows.shape}")
    return jax.tree.map(np.asarray, self._apply(self.variables, windows))

  def patch_outputs(self, patches) -> dict:
    """log-mel `[n, 187, 96]` patches -> numpy outputs (the original graph's input)."""
    return jax.tree.map(np.asarray, self._apply_patches(self.variables, jnp.asarray(patches)))

  def taggram(self, wav) -> np.ndarray:
    """float `[samples]` -> sigmoid tags `[patches, labels]`, musicnn's extractor: the whole
    clip's log-mel cut into non-overlapping 187-frame patches (a shorter tail is dropped)."""
    spectrogram = np.asarray(log_mel(np.asarray(wav, np.float32)[None]))[0]
    if spectrogram.shape[0] < PATCH_FRAMES:
      raise ValueError(f"musicnn needs at least 3 s of audio ({WINDOW_SAMPLES} samples at "
                       f"16 kHz), got {np.asarray(wav).shape[-1]} samples")
    starts = range(0, spectrogram.shape[0] - PATCH_FRAMES + 1, PATCH_FRAMES)
    patches = np.stack([spectrogram[s:s + PATCH_FRAMES] for s in starts])
    return 1.0 / (1.0 + np.exp(-self.patch_outputs(patches)["logits"]))
