"""Does the codec keep the waveform? SoundStream trained briefly under a reconstruction
objective, scored on held-out synthetic music at 1.5, 3 and 6 kbps.

Run:  .venv/bin/python bench/codec_objective.py [--steps 2000] [--variants 1,0,0.1 0,0,1]

Each variant is `waveform_weight,stft_weight,reconstruction_weight` (time-domain L1,
multi-resolution STFT, multi-scale mel: `soundstream.SoundStream`'s weights), balanced by
default (`--balance`: each weight is its term's share of the gradient into the reconstruction,
`codec/loss_balancer.py`). The codec: 16 kHz, hop 320 (50 Hz), `--levels` x `--codebook_size`
codes (20 x 64 = 6 kbps, whose first 5 and 10 levels are 1.5 and 3 kbps: quantizer dropout
trains every prefix), `--channels` and `--embedding_dim` as SoundStreamConfig's. No
discriminators. Data: the demo's synthetic music (`synthetic_music/demo`'s clips, rendered
here: seed 0, 4 s, the demo attribute space) at the tokenizers' -20 dBFS; it trains on random
`--crop_seconds` crops of clips 0-255 (the demo's train split) and scores the whole 4 s of
clips 256-287 (its validation split). Prints, per variant and bitrate, the held-out SI-SNR,
mel distance (`evaluation/codec_metrics.py`) and the reconstruction's RMS over the input's.
"""
import argparse
import dataclasses
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

from musiclm_jax.codec.discriminators import DiscriminatorConfig
from musiclm_jax.codec.soundstream import SoundStreamConfig
from musiclm_jax.codec.soundstream_gan import SoundStream
from musiclm_jax.core import audio
from musiclm_jax.core.train_state import TrainState
from musiclm_jax.data import music_synth, music_tokenizers, synthetic_music
from musiclm_jax.evaluation import codec_metrics
from musiclm_jax.stages import token_layout

# The demo's data set, so the bench follows it if its config changes.
DEMO_SET = synthetic_music.config_by_name("demo")
RATE = DEMO_SET.sample_rate
KBPS = (1.5, 3.0, 6.0)


def clips(indices: range) -> np.ndarray:
  """`[len(indices), samples]` float32: those clips of synthetic_music/demo, at the level the
  tokenizers hear."""
  return np.stack([audio.loudness_normalize(
      music_synth.render_clip(i, DEMO_SET.seed, RATE, DEMO_SET.seconds, DEMO_SET.space)[0],
      music_tokenizers.TARGET_DBFS) for i in indices]).astype(np.float32)


def make_model(args, weights) -> SoundStream:
  layout = dataclasses.replace(token_layout.TINY, acoustic_levels=args.levels,
                               acoustic_codebook_size=args.codebook_size)
  config = SoundStreamConfig(layout=layout, strides=(2, 4, 5, 8), channels=args.channels,
                             embedding_dim=args.embedding_dim, dead_code_threshold=0.5)
  waveform, stft, mel = weights
  return SoundStream(config, DiscriminatorConfig(), adversarial_weight=0.0, feature_weight=0.0,
                     waveform_weight=waveform, stft_weight=stft, reconstruction_weight=mel,
                     balance_losses=args.balance)


def train(model: SoundStream, train_clips: np.ndarray, steps: int, batch: int, samples: int,
          learning_rate: float) -> TrainState:
  variables = nn.meta.unbox(model.get_initial_variables(
      jax.random.key(0, impl="rbg"), {"audio": (batch, samples)}))
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(50, steps // 4), steps,
                                                learning_rate / 10)
  # Without discriminators there is no GAN to calm: Adam's usual beta1.
  optimizer = model.make_optimizer(
      lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule, 0.9, 0.9)), None)
  params = variables.pop("params")
  state = TrainState.create(params, optimizer.init(params), variables)
  step = jax.jit(lambda s, b, r: model.train_step(s, b, r, optimizer))
  crops = np.random.default_rng(0)
  for _ in range(steps):
    rows = crops.integers(0, len(train_clips), batch)
    starts = crops.integers(0, train_clips.shape[1] - samples + 1, batch)
    wav = np.stack([train_clips[r, s:s + samples] for r, s in zip(rows, starts)])
    state, _ = step(state, {"audio": jnp.asarray(wav)}, jax.random.key(1))
  return state


def score(model: SoundStream, state: TrainState, held_out: np.ndarray) -> dict:
  """{kbps: (SI-SNR dB, mel distance, RMS ratio)} over the held-out clips."""
  variables = {"params": state.params["generator"], **state.model_state}
  apply = jax.jit(model.generator.apply, static_argnums=2)
  bits = np.log2(model.config.codebook_size) * model.config.frame_rate
  result = {}
  for kbps in KBPS:
    n_q = int(round(kbps * 1000 / bits))
    if n_q > model.config.num_levels:
      continue
    wav_hat = np.concatenate([apply(variables, jnp.asarray(held_out[i:i + 8]), n_q)[0]
                              for i in range(0, len(held_out), 8)])
    result[model.config.bitrate(n_q) / 1000] = (
        float(jnp.mean(codec_metrics.si_snr(held_out, wav_hat))),
        float(jnp.mean(codec_metrics.mel_distance(held_out, wav_hat, RATE))),
        float(np.std(wav_hat) / np.std(held_out)))
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--variants", nargs="+", default=["1,0,0.1", "0,0,1"])
  parser.add_argument("--balance", action=argparse.BooleanOptionalAction, default=True)
  parser.add_argument("--levels", type=int, default=20)
  parser.add_argument("--codebook_size", type=int, default=64)
  parser.add_argument("--channels", type=int, default=16)
  parser.add_argument("--embedding_dim", type=int, default=64)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--crop_seconds", type=float, default=0.4)
  parser.add_argument("--learning_rate", type=float, default=1e-3)
  args = parser.parse_args()
  samples = int(args.crop_seconds * RATE) // 320 * 320
  train_clips = clips(range(DEMO_SET.num_train))
  held_out = clips(range(DEMO_SET.num_train, DEMO_SET.num_train + DEMO_SET.num_validation))
  print(f"{args.levels} levels x {args.codebook_size} codes, channels {args.channels}, "
        f"embedding {args.embedding_dim}, {args.steps} steps of {args.batch} x "
        f"{samples / RATE:g} s, balanced: {args.balance}")
  print("| waveform L1 | MR-STFT | mel | kbps | held-out SI-SNR dB | mel distance | RMS ratio "
        "| train s |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for variant in args.variants:
    weights = tuple(float(w) for w in variant.split(","))
    model = make_model(args, weights)
    start = time.perf_counter()
    state = train(model, train_clips, args.steps, args.batch, samples, args.learning_rate)
    seconds = time.perf_counter() - start
    for kbps, (si_snr, mel, rms) in score(model, state, held_out).items():
      print(f"| {weights[0]:g} | {weights[1]:g} | {weights[2]:g} | {kbps:g} | {si_snr:.1f} | "
            f"{mel:.3f} | {rms:.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
  main()
