"""VGGish (Hershey et al., 2017): the AudioSet embedding behind FAD_VGG, in Flax.

The weights are not shipped: download the released TF1 checkpoint `vggish_model.ckpt`
(tensorflow/models, research/audioset/vggish; Apache 2.0) yourself and point the loader at it.

  embedder = VGGishEmbedder.load("/models/vggish_model.ckpt")
  embedder.embed(windows)    # float [n, 15600] at 16 kHz -> [n, 128]

Front end, as the release's `vggish_input`: 16 kHz mono; 25 ms frames (400 samples) every
10 ms without centring, periodic Hann, 512-point FFT magnitude; 64 HTK-mel bands over
125-7500 Hz (triangles in mel space, DC bin zeroed); log(mel + 0.01); examples of 96 frames
(0.96 s), not overlapping. One example is therefore 400 + 95 x 160 = 15600 samples and
consecutive examples start 15360 samples apart, which is the embedder's window and hop.
Network: VGG-style 3x3 convs 64-128-256x2-512x2 with 2x2 max-pools, fc 4096-4096-128. The
embedding is the raw 128-d fc2 output (`relu_embedding=False`, as in the current release;
older releases applied a ReLU); the release's PCA + 8-bit quantisation is not applied (FAD
uses the float embedding).
"""
import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16000
FRAME = 400
HOP = 160
N_FFT = 512
NUM_BANDS = 64
LOWER_HZ, UPPER_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96
WINDOW_SAMPLES = FRAME + (EXAMPLE_FRAMES - 1) * HOP
EXAMPLE_HOP_SAMPLES = EXAMPLE_FRAMES * HOP


def htk_mel(hz):
  return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


# Kept: VGGish's triangles are linear in mel; librosa's (htk, no norm) in Hz, 0.4% of peak off.
def mel_matrix(num_bands: int = NUM_BANDS, n_fft: int = N_FFT,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """`[n_fft // 2 + 1, num_bands]` triangles, equally spaced and unnormalised in HTK mel."""
  bins_mel = htk_mel(np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1))
  edges = np.linspace(htk_mel(LOWER_HZ), htk_mel(UPPER_HZ), num_bands + 2)
  lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (bins_mel[:, None] - lower) / (center - lower)
  falling = (upper - bins_mel[:, None]) / (upper - center)
  weights = np.maximum(0.0, np.minimum(rising, falling))
  weights[0, :] = 0.0  # the DC bin carries no pitch
  return weights.astype(np.float32)


def log_mel_examples(wav) -> jnp.ndarray:
  """float `[batch, WINDOW_SAMPLES]` -> `[batch, 96, 64]` VGGish input examples."""
  wav = jnp.asarray(wav, jnp.float32)
  num_frames = 1 + (wav.shape[-1] - FRAME) // HOP
  index = np.arange(FRAME)[None, :] + HOP * np.arange(num_frames)[:, None]
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME) / FRAME)
  magnitude = jnp.abs(jnp.fft.rfft(wav[:, index] * window, n=N_FFT, axis=-1))
  return jnp.log(magnitude @ mel_matrix() + LOG_OFFSET)[:, :EXAMPLE_FRAMES]


class VGGish(nn.Module):
  """`[batch, 96, 64]` log-mel examples -> `[batch, embedding_size]`. Submodule names are the
  release's TF scopes (conv3_1 is `vggish/conv3/conv3_1`)."""
  conv_features: Sequence[int] = (64, 128, 256, 256, 512, 512)
  fc_units: Sequence[int] = (4096, 4096)
  embedding_size: int = 128
  relu_embedding: bool = False

  @nn.compact
  def __call__(self, x):
    x = x[..., None]
    names = ("conv1", "conv2", "conv3_1", "conv3_2", "conv4_1", "conv4_2")
    pool_after = {"conv1", "conv2", "conv3_2", "conv4_2"}
    for name, features in zip(names, self.conv_features):
      x = nn.relu(nn.Conv(features, (3, 3), padding="SAME", name=name)(x))
      if name in pool_after:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)  # NHWC row-major, as slim.flatten
    for i, units in enumerate(self.fc_units):
      x = nn.relu(nn.Dense(units, name=f"fc1_{i + 1}")(x))
    x = nn.Dense(self.embedding_size, name="fc2")(x)
    return nn.relu(x) if self.relu_embedding else x


@dataclasses.dataclass
class VGGishEmbedder:
  """A VGGish network with its parameters; `embed` runs front end + network."""
  params: dict
  network: VGGish = dataclasses.field(default_factory=VGGish)
  name: str = "vggish"
  sample_rate: int = SAMPLE_RATE
  window_samples: int = WINDOW_SAMPLES
  hop_samples: int = EXAMPLE_HOP_SAMPLES

  def __post_init__(self):
    self._embed = jax.jit(lambda params, wav: self.network.apply(
        {"params": params}, log_mel_examples(wav)))

  @classmethod
  def load(cls, checkpoint, network: VGGish = None, name: str = "vggish") -> "VGGishEmbedder":
    from musiclm_jax.evaluation import vggish_weights  # pylint: disable=import-outside-toplevel
    network = network or VGGish()
    return cls(vggish_weights.load(checkpoint, network), network, name)

  def embed(self, windows) -> np.ndarray:
    windows = np.asarray(windows, np.float32)
    if windows.ndim != 2 or windows.shape[1] != self.window_samples:
      raise ValueError(f"VGGish takes windows [n, {self.window_samples}] at 16 kHz, got "
                       f"shape {windows.shape}")
    return np.asarray(self._embed(self.params, windows))
