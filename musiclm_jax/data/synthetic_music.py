"""`synthetic_music`: a TFDS builder of procedurally generated, captioned music.

The offline default data set: clips come from `musiclm_jax.data.music_synth.render_clip`, so a build
needs no download, is identical on every machine for the same config, and a few thousand
clips build in about two minutes on two cores (`bench/synthetic_music_build.py`).

Splits: `train` holds clips [0, num_train), `validation` clips [num_train, num_train +
num_validation) of the same seed, so the splits never share a clip.

  audio        int16 PCM [samples] at the config's sample rate (tfds_audio.PcmAudio)
  caption      one sentence naming every attribute
  clip_index   the clip's index in its seed's sequence (render_clip's `index`)
  attributes   instrument, register, root_midi, key, mode, tempo_bpm, tempo, drums,
               loudness, loudness_dbfs: the ground truth the caption was written from

    builder = synthetic_music.ensure_built("16k", data_dir)   # builds once, then reuses
    ds = builder.as_dataset(split="train")
"""
from __future__ import annotations

import dataclasses
import os
from typing import Union

import numpy as np
import tensorflow_datasets as tfds

from musiclm_jax.data import music_synth
from musiclm_jax.data import tfds_audio

NAME = "synthetic_music"
VERSION = "1.0.0"


@dataclasses.dataclass(eq=False)
class SyntheticMusicConfig(tfds.core.BuilderConfig):
  """How many clips of what length at which rate; `seed` picks the corpus and
  `attribute_space` (a key of music_synth.SPACES) the attribute values it draws from."""
  sample_rate: int = 16000
  seconds: float = 10.0
  num_train: int = 2048
  num_validation: int = 128
  seed: int = 0
  attribute_space: str = "full"

  @property
  def space(self) -> music_synth.AttributeSpace:
    if self.attribute_space not in music_synth.SPACES:
      raise ValueError(f"synthetic_music config {self.name!r}: unknown attribute_space "
                       f"{self.attribute_space!r}; known: {list(music_synth.SPACES)}")
    return music_synth.SPACES[self.attribute_space]


BUILDER_CONFIGS = (
    SyntheticMusicConfig(name="16k", description="16 kHz (w2v-BERT, MuLan), 10 s clips",
                         sample_rate=16000),
    SyntheticMusicConfig(name="24k", description="24 kHz (SoundStream), 10 s clips",
                         sample_rate=24000),
    SyntheticMusicConfig(name="tiny", description="16 kHz, 4 s clips, 256 + 32: tests",
                         sample_rate=16000, seconds=4.0, num_train=256, num_validation=32),
    SyntheticMusicConfig(name="demo", description="16 kHz, 4 s clips, 256 + 32, only the "
                         "demo prompts' attributes vary (music_synth.DEMO)",
                         sample_rate=16000, seconds=4.0, num_train=256, num_validation=32,
                         attribute_space="demo"),
)


def attribute_features() -> tfds.features.FeaturesDict:
  text = tfds.features.Text
  return tfds.features.FeaturesDict({
      "instrument": text(), "register": text(), "root_midi": np.int32, "key": text(),
      "mode": text(), "tempo_bpm": np.int32, "tempo": text(), "drums": np.bool_,
      "loudness": text(), "loudness_dbfs": np.float32,
  })


class SyntheticMusic(tfds.core.GeneratorBasedBuilder):
  """Procedural music clips with captions derived from their generating attributes."""

  VERSION = tfds.core.Version(VERSION)
  BUILDER_CONFIGS = list(BUILDER_CONFIGS)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return self.dataset_info_from_configs(
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "audio": tfds_audio.PcmAudio(config.sample_rate),
            "caption": tfds.features.Text(),
            "clip_index": np.int64,
            "attributes": attribute_features(),
        }),
        supervised_keys=("audio", "caption"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    config = self.builder_config
    total = config.num_train + config.num_validation
    splits = {"train": range(0, config.num_train), "validation": range(config.num_train, total)}
    # TFDS refuses to finalise an empty split, so a config may leave one out.
    return {name: self._generate_examples(indices) for name, indices in splits.items()
            if len(indices)}

  def _generate_examples(self, indices):
    config = self.builder_config
    for index in indices:
      wav, caption, attributes = music_synth.render_clip(
          index, config.seed, config.sample_rate, config.seconds, config.space)
      yield index, {"audio": tfds_audio.to_pcm16(wav), "caption": caption, "clip_index": index,
                    "attributes": attributes}


def config_by_name(name: str) -> SyntheticMusicConfig:
  return tfds_audio.config_by_name(BUILDER_CONFIGS, NAME, name)


def builder(config: Union[str, SyntheticMusicConfig],
            data_dir: Union[str, os.PathLike]) -> SyntheticMusic:
  """The builder of `config` (a name or a SyntheticMusicConfig) under `data_dir`."""
  if isinstance(config, str):
    config = config_by_name(config)
  return SyntheticMusic(config=config, data_dir=os.fspath(data_dir))


def ensure_built(config: Union[str, SyntheticMusicConfig],
                 data_dir: Union[str, os.PathLike]) -> SyntheticMusic:
  """Builds `config` under `data_dir` unless it is there already; returns its builder.

  Single-process generation (no Beam, no multiprocessing), and no network: TFDS would
  otherwise look for a prepared copy on GCS first.
  """
  return tfds_audio.prepared(builder(config, data_dir))
