"""Does the codec keep the waveform? The tiny SoundStream trained briefly under several
reconstruction objectives, scored on held-out tones.

Run:  .venv/bin/python bench/codec_objective.py [--steps 300] [--variants 0,0,1 10,0,1 0,1,1]

Each variant is `waveform_weight,stft_weight,reconstruction_weight` (time-domain L1,
multi-resolution STFT, multi-scale mel: `soundstream.SoundStream`'s weights). For each it
trains the tiny codec of `musiclm_jax/gin/models/soundstream/tiny.gin` (16 kHz, 4 levels x 64
codes at 50 Hz: 1.2 kbps) without discriminators for `--steps` steps of 4 x 0.4 s crops of
the synthetic tone task (split 0, 64 clips; Adam 3e-3 with warm-up and cosine decay), then
prints the held-out (split 1, 8 clips) SI-SNR, mel distance and the reconstruction's RMS over
the input's.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf

from musiclm_jax.codec.discriminators import DiscriminatorConfig
from musiclm_jax.codec.soundstream import SoundStreamConfig
from musiclm_jax.codec.soundstream_gan import SoundStream
from musiclm_jax.core.train_state import TrainState
from musiclm_jax.data.synthetic_tones import tone_clip
from musiclm_jax.evaluation import codec_metrics
from musiclm_jax.stages import token_layout

RATE = token_layout.TINY.acoustic_sample_rate
BATCH, SAMPLES = 4, 6400


def _tones(count: int, samples: int, split: int) -> np.ndarray:
  return np.stack([tone_clip(tf.constant([split, i], tf.int64), RATE, samples).numpy()
                   for i in range(count)])


def _model(waveform_weight, stft_weight, reconstruction_weight) -> SoundStream:
  config = SoundStreamConfig(layout=token_layout.TINY, strides=(2, 4, 5, 8), channels=4,
                             embedding_dim=32, dead_code_threshold=0.5)
  return SoundStream(config, DiscriminatorConfig(), adversarial_weight=0.0, feature_weight=0.0,
                     waveform_weight=waveform_weight, stft_weight=stft_weight,
                     reconstruction_weight=reconstruction_weight)


def run(weights, steps: int, train, held_out) -> dict:
  model = _model(*weights)
  variables = nn.meta.unbox(model.get_initial_variables(
      jax.random.key(0, impl="rbg"), {"audio": (BATCH, SAMPLES)}))
  schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 20, steps, 3e-4)
  optimizer = model.make_optimizer(
      lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule, 0.5, 0.9)), None)
  params = variables.pop("params")
  state = TrainState.create(params, optimizer.init(params), variables)
  step = jax.jit(lambda s, b, r: model.train_step(s, b, r, optimizer))
  crops = np.random.default_rng(0)
  for _ in range(steps):
    rows, starts = crops.integers(0, len(train), BATCH), crops.integers(0, RATE - SAMPLES + 1, BATCH)
    batch = {"audio": jnp.asarray(np.stack([train[r, s:s + SAMPLES] for r, s in zip(rows, starts)]))}
    state, _ = step(state, batch, jax.random.key(1))
  wav_hat = model.generator.apply({"params": state.params["generator"], **state.model_state},
                                  held_out)[0]
  return {"si_snr_db": float(jnp.mean(codec_metrics.si_snr(held_out, wav_hat))),
          "mel_distance": float(jnp.mean(codec_metrics.mel_distance(held_out, wav_hat, RATE))),
          "rms_ratio": float(jnp.std(wav_hat) / jnp.std(held_out))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--variants", nargs="+", default=["0,0,1", "10,0,1", "0,1,1"])
  args = parser.parse_args()
  train, held_out = _tones(64, RATE, 0), jnp.asarray(_tones(8, SAMPLES, 1))
  print("| waveform L1 | MR-STFT | mel | held-out SI-SNR dB | mel distance | RMS ratio | s |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for variant in args.variants:
    weights = tuple(float(w) for w in variant.split(","))
    start = time.perf_counter()
    result = run(weights, args.steps, train, held_out)
    print(f"| {weights[0]:g} | {weights[1]:g} | {weights[2]:g} | {result['si_snr_db']:.1f} | "
          f"{result['mel_distance']:.3f} | {result['rms_ratio']:.3f} | "
          f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
  main()
