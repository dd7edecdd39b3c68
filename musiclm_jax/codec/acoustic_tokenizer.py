"""SoundStream as a tokenizer: `encode(wav) -> codes`, `decode(codes) -> wav`, for any length.

  codec = Codec.from_checkpoint("/tmp/soundstream_tiny", SoundStreamConfig(layout=tokens.TINY,
                                strides=(2, 4, 5, 8), channels=4, embedding_dim=32))
  codes = codec.encode(wav)                    # [batch, frames, levels] int32, 50 Hz
  coarse = codec.encode(wav, n_q=4)            # the first 4 levels: a quarter of the bitrate
  audio = codec.decode(codes, num_samples=wav.shape[1])

Audio is padded with zeros to a whole number of frames (the codec is causal, so padding at
the end never changes earlier frames) and decoded audio can be trimmed back. Both functions
are jit-compiled once per (shape, n_q) and run batched; bad input raises a ValueError that
says what is wrong before anything is compiled.
"""
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.layers import rvq
from musiclm_jax.codec.soundstream import SoundStreamCodec, SoundStreamConfig


class Codec:
  """A trained SoundStream generator's encode / decode.

  variables: `{"params": generator params, "codebooks": RVQ state}` (what
  `SoundStreamCodec.init` returns, or the generator's part of a training checkpoint).
  """

  def __init__(self, config: SoundStreamConfig, variables: dict):
    self.config = config
    self.module = SoundStreamCodec(config)
    self.variables = {"params": variables["params"], rvq.COLLECTION: variables[rvq.COLLECTION]}
    self._encode = jax.jit(
        lambda v, wav, n_q: self.module.apply(v, wav, n_q, method=SoundStreamCodec.encode),
        static_argnums=2)
    self._decode = jax.jit(
        lambda v, codes: self.module.apply(v, codes, method=SoundStreamCodec.decode))

  @classmethod
  def from_checkpoint(cls, model_dir, config: SoundStreamConfig,
                      step: Optional[int] = None) -> "Codec":
    """The generator of the newest (or `step`) checkpoint `model_dir/checkpoints/<step>`
    written by `musiclm_jax.train` with a `soundstream_gan.SoundStream` model."""
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    # orbax reads only absolute paths; a relative model_dir is the caller's working folder.
    root = os.path.join(os.path.abspath(os.fspath(model_dir)), "checkpoints")
    steps = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
    if not steps:
      raise FileNotFoundError(f"no SoundStream checkpoint under {root}")
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise FileNotFoundError(f"no checkpoint step {step} under {root}; steps: {steps}")
    state = ocp.StandardCheckpointer().restore(os.path.join(root, str(step), "state"))
    try:
      variables = {"params": state["params"]["generator"],
                   rvq.COLLECTION: state["model_state"][rvq.COLLECTION]}
    except KeyError as error:
      raise ValueError(f"checkpoint {root}/{step} is not a SoundStream training state "
                       f"(missing {error})") from None
    return cls(config, jax.device_put(variables))

  @property
  def frame_rate(self) -> int:
    return self.config.frame_rate

  def bitrate(self, n_q: Optional[int] = None) -> float:
    return self.config.bitrate(n_q)

  def encode(self, wav, n_q: Optional[int] = None) -> jax.Array:
    """float `[batch, samples]` at the config's sample rate -> int32 codes
    `[batch, ceil(samples / hop), n_q]` (n_q defaults to every level)."""
    n_q = self.config.num_levels if n_q is None else int(n_q)
    if not 1 <= n_q <= self.config.num_levels:
      raise ValueError(f"encode: n_q={n_q} must be in [1, {self.config.num_levels}]")
    shape = np.shape(wav)
    if len(shape) != 2:
      raise ValueError(f"encode: audio must be [batch, samples], got shape {shape}")
    if shape[1] == 0:
      raise ValueError("encode: audio has 0 samples")
    finite = np.asarray(jnp.all(jnp.isfinite(jnp.asarray(wav)), axis=1))
    if not finite.all():
      raise ValueError(f"encode: audio contains NaN or Inf samples (batch rows "
                       f"{np.flatnonzero(~finite).tolist()})")
    hop = self.config.hop
    padding = -shape[1] % hop
    wav = jnp.pad(jnp.asarray(wav, jnp.float32), ((0, 0), (0, padding)))
    return self._encode(self.variables, wav, n_q)

  def decode(self, codes, num_samples: Optional[int] = None) -> jax.Array:
    """int codes `[batch, frames, n_q]` (the first n_q levels) -> float32
    `[batch, frames * hop]`, trimmed to `num_samples` when given."""
    shape = np.shape(codes)
    if len(shape) != 3:
      raise ValueError(f"decode: codes must be [batch, frames, levels], got shape {shape}")
    if not 1 <= shape[2] <= self.config.num_levels:
      raise ValueError(f"decode: codes have {shape[2]} levels; the codec has "
                       f"{self.config.num_levels}")
    codes = jnp.asarray(codes)
    if not jnp.issubdtype(codes.dtype, jnp.integer):
      raise ValueError(f"decode: codes must be integers, got dtype {codes.dtype}")
    size = self.config.codebook_size
    if bool(jnp.any((codes < 0) | (codes >= size))):
      raise ValueError(f"decode: codes outside [0, {size})")
    wav = self._decode(self.variables, codes.astype(jnp.int32))
    return wav if num_samples is None else wav[:, :num_samples]

  def reconstruct(self, wav, n_q: Optional[int] = None) -> jax.Array:
    """decode(encode(wav)) at the input's length."""
    return self.decode(self.encode(wav, n_q), num_samples=np.shape(wav)[-1])
