"""Synthetic tones and chords with a little noise, as seqio Tasks of raw audio.

A stand-in corpus for training and testing the codec without any audio files: every clip is
a deterministic function of (split, index), built from TF ops only (stateless random ops over
a range dataset) so the tf.data iterator can be checkpointed and a resumed run sees exactly
the data an uninterrupted one would.

Each clip: a chord of 1-3 notes (root log-uniform in 110-880 Hz, major or minor triad
intervals), each note with 3 harmonics of decaying amplitude, re-struck every 0.25-1 s with an
exponential decay (transients for the short STFT windows), plus white noise at -40..-30 dB.

Registered tasks (feature `audio`: float32 [samples], randomly cropped to
`sequence_length["audio"]` samples; no crop when the length is not given):
  synthetic_tones_16k   16 kHz (the tiny token layout's acoustic rate)
  synthetic_tones_24k   24 kHz (the paper's)
Any other raw-audio task with an `audio` float32 feature (e.g. `synthetic_music_audio_16k`)
plugs into the same gin files by changing MIXTURE_OR_TASK_NAME; `random_audio_crop` is the
crop to reuse.
"""
import math

import gin
import seqio
import tensorflow as tf

from musiclm_jax.stages import token_layout

TASK_NAME = "synthetic_tones_{khz}k"
SAMPLE_RATES = (16000, 24000)
CLIP_SECONDS = 2.0
NUM_EXAMPLES = {"train": 512, "validation": 64}
SPLIT_SEEDS = {"train": 0, "validation": 1}
AUDIO_FEATURE = "audio"
# Root-position triads: (1, 5/4, 3/2) major and (1, 6/5, 3/2) minor, in just intonation.
_CHORD_RATIOS = ((1.0, 1.25, 1.5), (1.0, 1.2, 1.5))
_NUM_HARMONICS = 3


def tone_clip(seed, sample_rate: int, num_samples: int):
  """One clip, float32 `[num_samples]`, peak ~0.5; `seed` is a stateless int64 pair."""
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
  uniform = lambda i, shape=(), lo=0.0, hi=1.0: tf.random.stateless_uniform(
      shape, seeds[i], lo, hi)
  num_notes = tf.random.stateless_uniform([], seeds[0], 1, 4, dtype=tf.int32)
  root = 110.0 * tf.pow(2.0, uniform(1, hi=3.0))                        # 110 .. 880 Hz
  minor = tf.random.stateless_uniform([], seeds[2], 0, 2, dtype=tf.int32)
  ratios = tf.gather(tf.constant(_CHORD_RATIOS), minor)                 # [3]
  note_on = tf.cast(tf.range(3) < num_notes, tf.float32)                # [3]
  t = tf.range(num_samples, dtype=tf.float32) / float(sample_rate)     # [samples]
  harmonics = tf.range(1, _NUM_HARMONICS + 1, dtype=tf.float32)        # [H]
  freqs = root * ratios[:, None] * harmonics[None, :]                   # [3, H]
  # Partials above Nyquist would alias into noise the codec cannot be blamed for.
  audible = tf.cast(freqs < 0.45 * sample_rate, tf.float32)
  phases = uniform(3, shape=(3, _NUM_HARMONICS), hi=2.0 * math.pi)
  weights = note_on[:, None] * audible / harmonics[None, :] ** 1.5
  partials = tf.sin(2.0 * math.pi * freqs[..., None] * t + phases[..., None])  # [3, H, samples]
  chord = tf.reduce_sum(weights[..., None] * partials, axis=(0, 1))
  period = uniform(4, lo=0.25, hi=1.0)
  envelope = tf.exp(-tf.math.floormod(t, period) / (0.3 * period))
  chord = 0.5 * chord * envelope / tf.reduce_sum(weights)
  noise_db = uniform(5, lo=-40.0, hi=-30.0)
  noise = tf.random.stateless_normal([num_samples], seeds[5]) * tf.pow(10.0, noise_db / 20.0)
  return chord + noise


def tones_dataset_fn(split: str, shuffle_files: bool = False, seed=None, *, sample_rate: int,
                     num_examples=None) -> tf.data.Dataset:
  """seqio dataset_fn: `{"audio": [clip samples]}` in index order (the Task shuffles)."""
  del shuffle_files, seed
  num_examples = num_examples or NUM_EXAMPLES
  if split not in num_examples:
    raise ValueError(f"unknown split {split!r}; synthetic tones have {sorted(num_examples)}")
  num_samples = int(CLIP_SECONDS * sample_rate)

  def make(index):
    seed = tf.stack([tf.constant(SPLIT_SEEDS[split], tf.int64), index])
    clip = tf.ensure_shape(tone_clip(seed, sample_rate, num_samples), [num_samples])
    # Audio only: PassThroughFeatureConverter hands every feature to the model, and a string
    # id cannot become a jax.Array.
    return {AUDIO_FEATURE: clip}

  return tf.data.Dataset.range(num_examples[split]).map(make)


@seqio.map_over_dataset(num_seeds=1)
def _crop(example, sequence_length, seed):
  length = sequence_length[AUDIO_FEATURE]
  wav = example[AUDIO_FEATURE]
  available = tf.shape(wav)[0]
  check = tf.debugging.assert_greater_equal(
      available, length, message=f"clip shorter than the {AUDIO_FEATURE} crop of {length} samples")
  with tf.control_dependencies([check]):
    start = tf.random.stateless_uniform([], seed, 0, available - length + 1, dtype=tf.int32)
  return dict(example, **{AUDIO_FEATURE: tf.ensure_shape(wav[start:start + length], [length])})


def random_audio_crop(dataset: tf.data.Dataset, sequence_length=None) -> tf.data.Dataset:
  """seqio preprocessor: a random `sequence_length["audio"]`-sample window of each clip
  (seeded statelessly, so it is checkpointable); passes clips through without a length."""
  if not sequence_length or sequence_length.get(AUDIO_FEATURE) is None:
    return dataset
  return _crop(dataset, sequence_length)


def register_tone_tasks(sample_rates=SAMPLE_RATES, num_examples=None) -> list[str]:
  """Registers `synthetic_tones_{16,24}k`; idempotent. Returns the task names."""
  num_examples = dict(num_examples or NUM_EXAMPLES)
  names = []
  for rate in sample_rates:
    name = TASK_NAME.format(khz=rate // 1000)
    if name not in seqio.TaskRegistry.names():
      source = seqio.FunctionDataSource(
          lambda split, shuffle_files, seed=None, rate=rate: tones_dataset_fn(
              split, shuffle_files, seed, sample_rate=rate, num_examples=num_examples),
          splits=tuple(num_examples), num_input_examples=num_examples)
      seqio.TaskRegistry.add(
          name, source=source, preprocessors=[random_audio_crop],
          output_features={AUDIO_FEATURE: seqio.ContinuousFeature(dtype=tf.float32, rank=1)})
    names.append(name)
  return names


@gin.configurable(module="tasks")
def tones_task_name(layout: token_layout.TokenLayout = token_layout.PAPER) -> str:
  """The tone task at the layout's acoustic sample rate, e.g. `synthetic_tones_16k`."""
  rate = layout.acoustic_sample_rate
  if rate not in SAMPLE_RATES:
    raise ValueError(f"no synthetic tone task at {rate} Hz; registered rates: {SAMPLE_RATES}")
  return TASK_NAME.format(khz=rate // 1000)


@gin.configurable(module="tasks")
def audio_feature_lengths(layout: token_layout.TokenLayout = token_layout.PAPER,
                          crop_seconds: float = 1.0) -> dict[str, int]:
  """`{"audio": samples}` of a crop at the layout's acoustic rate, a whole number of codec
  frames (SoundStream needs samples to be a multiple of its hop)."""
  frames = layout.frames("acoustic", crop_seconds)
  return {AUDIO_FEATURE: frames * layout.acoustic_hop}


register_tone_tasks()
