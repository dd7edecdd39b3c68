"""Tiny MuLan configurations and a small captioned synthetic set for the MuLan tests.

`tiny_model()` has a from-scratch 2-layer 32-d BERT (fast to initialise and step);
`pretrained_model()` has the pre-trained MiniLM-L6 text tower, frozen, as in
musiclm_jax/gin/models/mulan/tiny.gin. `CAPTIONED` is a synthetic_music config of 2 s clips whose tasks
`synthetic_music_{audio,pairs}_mulan_test` are registered on import; `build(data_dir)` renders
it (about 3 s).
"""
import functools

import flax.linen as nn
import jax

from musiclm_jax.mulan import bert
from musiclm_jax.layers import resnet
from musiclm_jax.mulan.mulan import MuLan, MuLanConfig, MuLanModel
from musiclm_jax.data import audio_tasks, synthetic_music

SAMPLE_RATE = 16000
WINDOW_SECONDS = 1.0
WINDOW = int(SAMPLE_RATE * WINDOW_SECONDS)
MAX_TEXT_LENGTH = 48

CAPTIONED = synthetic_music.SyntheticMusicConfig(
    name="mulan_test", description="MuLan tests: 2 s clips at 16 kHz", sample_rate=SAMPLE_RATE,
    seconds=2.0, num_train=160, num_validation=32, seed=7)
AUDIO_TASK, PAIRS_TASK = audio_tasks.register_synthetic_music_tasks(CAPTIONED)


def tiny_text_tower(**overrides) -> bert.BertConfig:
  kwargs = dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_layers=2,
                dropout_rate=0.0, max_positions=64)
  kwargs.update(overrides)
  return bert.BertConfig(**kwargs)


def tiny_config(**overrides) -> MuLanConfig:
  kwargs = dict(audio_tower=resnet.tiny(), text_tower=tiny_text_tower(),
                max_text_length=MAX_TEXT_LENGTH, window_seconds=WINDOW_SECONDS,
                hop_seconds=0.5, embed_dim=16)
  kwargs.update(overrides)
  return MuLanConfig(**kwargs)


def tiny_model(**kwargs) -> MuLanModel:
  config = kwargs.pop("config", None) or tiny_config()
  return MuLanModel(MuLan(config), **kwargs)


def pretrained_model(**kwargs) -> MuLanModel:
  config = tiny_config(text_tower=bert.minilm_l6(dropout_rate=0.0), embed_dim=128)
  kwargs = dict(dict(pretrained_text_tower=True, freeze_text_tower=True), **kwargs)
  return MuLanModel(MuLan(config), **kwargs)


@functools.lru_cache(maxsize=None)
def _jitted_init(config: MuLanConfig):
  model = MuLanModel(MuLan(config))
  return jax.jit(lambda rng: nn.meta.unbox(model.init_variables(rng)["params"]))


def init_params(model: MuLanModel, seed: int = 0):
  """Unboxed random parameters, compiled once per config and process."""
  return _jitted_init(model.config)(jax.random.key(seed))


def build(data_dir) -> None:
  synthetic_music.ensure_built(CAPTIONED, data_dir)


def validation_pairs(data_dir, split: str = "validation"):
  """(float32 wavs `[n, samples]`, captions) of a split of the built captioned set."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from musiclm_jax.data import tfds_audio  # pylint: disable=import-outside-toplevel
  ds = synthetic_music.builder(CAPTIONED, data_dir).as_dataset(split=split, shuffle_files=False)
  wavs, captions = [], []
  for example in ds.as_numpy_iterator():
    wavs.append(example["audio"].astype(np.float32) / tfds_audio.PCM_SCALE)
    captions.append(example["caption"].decode())
  return np.stack(wavs), captions


def train(model: MuLanModel, model_dir, steps: int):
  """The tests' short MuLan run through the one trainer (the set must be built); its state."""
  from musiclm_jax.core import optimizers, trainer  # pylint: disable=import-outside-toplevel
  return trainer.train(
      model=model, model_dir=str(model_dir), total_steps=steps, log_every=50,
      checkpoint_every=steps, seed=0,
      train_dataset_cfg=trainer.DatasetConfig(PAIRS_TASK, {"audio": WINDOW}, batch_size=16),
      optimizer_fn=functools.partial(optimizers.create, clip_norm=1.0),
      lr_schedule=optimizers.schedule(3e-3, warmup_steps=20, total_steps=steps))
