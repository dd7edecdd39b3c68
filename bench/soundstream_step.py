"""SoundStream's train step per phase: the warm-up step without discriminators against the GAN step.

Run:  .venv/bin/python bench/soundstream_step.py [--batch 8] [--seconds 1] [--repeats 6]

Builds the tiny codec model of musiclm_jax/gin/models/soundstream/tiny.gin with random weights, jits
`SoundStream.train_step` once per phase that `train_phase` names (the warm-up before
`discriminator_start_step`, then the full step), as the trainer does, and reports the median
of `--repeats` steps after one excluded compile-and-run. Random-noise batches: the step's cost
does not depend on the audio.
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from musiclm_jax.codec import soundstream_gan
from musiclm_jax.core.train_state import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_steps(batch_size: int = 8, seconds: float = 1.0):
  """The tiny codec's jitted train step per phase, each with the state at a step of that
  phase and a noise batch: `(model, samples, [(step, phase, train_step, state, batch)])`."""
  gin.add_config_file_search_path(os.path.join(REPO, "musiclm_jax", "gin"))
  gin.parse_config_files_and_bindings(["models/soundstream/tiny.gin"], [])
  model = soundstream_gan.SoundStream()
  samples = int(seconds * model.config.sample_rate) // model.config.hop * model.config.hop
  variables = nn.meta.unbox(model.get_initial_variables(jax.random.key(0),
                                                        {"audio": (batch_size, samples)}))
  optimizer = model.make_optimizer(lambda: optax.adam(1e-3), None)
  params = variables.pop("params")
  state = TrainState.create(params, optimizer.init(params), variables)
  noise = np.random.default_rng(0).normal(size=(batch_size, samples)).astype(np.float32)
  batch = {"audio": jnp.asarray(0.1 * noise)}
  steps = []
  for step in (0, model.discriminator_start_step):
    phase = model.train_phase(step)
    train_step = jax.jit(lambda s, b, p=phase: model.train_step(s, b, jax.random.key(1),
                                                                optimizer, phase=p))
    steps.append((step, phase, train_step,
                  state.replace(step=jnp.asarray(step, state.step.dtype)), batch))
  return model, samples, steps


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seconds", type=float, default=1.0)
  parser.add_argument("--repeats", type=int, default=6)
  args = parser.parse_args()
  model, samples, steps = build_steps(args.batch, args.seconds)
  print(f"tiny SoundStream, batch {args.batch} x {samples} samples, discriminators from step "
        f"{model.discriminator_start_step}")
  for step, phase, train_step, at_step, batch in steps:
    jax.block_until_ready(train_step(at_step, batch))
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      jax.block_until_ready(train_step(at_step, batch))
      times.append(time.perf_counter() - start)
    print(f"step {step:>4} phase {str(phase):<14} median {statistics.median(times):.3f} s "
          f"(min {min(times):.3f}, max {max(times):.3f})")


if __name__ == "__main__":
  main()
