"""SoundStream: frame rate and bitrate, paper size, causality, the encode / decode API and its
errors, and one GAN step."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musiclm_jax.codec import soundstream_gan
from musiclm_jax.stages import token_layout
from musiclm_jax.codec.acoustic_tokenizer import Codec
from musiclm_jax.layers import rvq
from musiclm_jax.codec.soundstream import SoundStreamCodec, SoundStreamConfig
from musiclm_jax.codec.soundstream_gan import SoundStream
from musiclm_jax.core.train_state import TrainState
from tests.soundstream_helpers import RATE, key, tiny_config, tiny_model, tones


def _count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _expected_generator_params(c, d, strides, kernel=7, dilations=3) -> int:
  """Closed form of Fig. 3's generator: conv weights + biases, layer by layer."""
  conv = lambda k, cin, cout: k * cin * cout + cout
  residual = lambda ch: dilations * (conv(kernel, ch, ch) + conv(1, ch, ch))
  encoder = conv(7, 1, c)
  for i, s in enumerate(strides):
    encoder += residual(c * 2 ** i) + conv(2 * s, c * 2 ** i, c * 2 ** (i + 1))
  encoder += conv(3, c * 2 ** len(strides), d)
  decoder = conv(7, d, c * 2 ** len(strides))
  for i, s in enumerate(reversed(strides)):
    cin, cout = c * 2 ** (len(strides) - i), c * 2 ** (len(strides) - 1 - i)
    decoder += conv(2 * s, cin, cout) + residual(cout)
  return encoder + decoder + conv(7, c, 1)


def test_paper_config_is_50hz_6kbps_with_13m_generator_parameters():
  # SoundStream's paper gives no parameter count; ours follows Fig. 3 at C = 32 with
  # D = 512 and MusicLM's strides 2-4-6-10 (= 480 at 24 kHz): 5.97M encoder + 7.02M decoder.
  model = SoundStream()
  cfg = model.config
  assert (cfg.sample_rate, cfg.hop, cfg.frame_rate) == (24000, 480, 50)
  assert (cfg.num_levels, cfg.codebook_size) == (12, 1024)
  assert cfg.bitrate() == 50 * 12 * math.log2(1024) == 6000.0
  variables = jax.eval_shape(lambda rng: nn.meta.unbox(model.get_initial_variables(
      rng, {"audio": (1, 24000)})), jax.random.key(0))
  generator = variables["params"]["generator"]
  assert _count(generator) == _expected_generator_params(32, 512, (2, 4, 6, 10)) == 12_984_833
  assert _count(variables["params"]["discriminator"]) == 22_460_612
  codebooks = variables[rvq.COLLECTION]["quantizer"]
  assert codebooks["codebook"].shape == (12, 1024, 512)
  codes = jax.eval_shape(lambda v, wav: SoundStreamCodec(cfg).apply(
      {"params": v["params"]["generator"], **{rvq.COLLECTION: v[rvq.COLLECTION]}}, wav,
      method=SoundStreamCodec.encode), variables, jax.ShapeDtypeStruct((2, 24000), jnp.float32))
  assert codes.shape == (2, 50, 12)


def test_strides_must_match_the_layout_hop():
  with pytest.raises(ValueError, match="acoustic_hop is 320"):
    SoundStreamConfig(layout=token_layout.TINY, strides=(2, 4, 6, 10))


@pytest.fixture(scope="module")
def codec():
  cfg = tiny_config()
  variables = nn.meta.unbox(SoundStreamCodec(cfg).init(key(0), jnp.zeros((1, 640))))
  return Codec(cfg, variables)


def test_tiny_codec_is_50hz_at_16khz_and_selects_the_bitrate(codec):
  wav = tones(2, RATE)
  codes = codec.encode(wav)
  assert codes.shape == (2, 50, 4) and codes.dtype == jnp.int32
  assert int(jnp.max(codes)) < 64 and int(jnp.min(codes)) >= 0
  assert codec.decode(codes).shape == (2, RATE)
  two = codec.encode(wav, n_q=2)
  np.testing.assert_array_equal(two, codes[..., :2])
  assert codec.bitrate(2) == 600.0 and codec.bitrate() == 1200.0
  assert codec.decode(two).shape == (2, RATE)


def test_any_length_is_padded_to_frames_and_trimmed_back(codec):
  wav = tones(3, 1000)                                   # 3.125 frames
  codes = codec.encode(wav)
  assert codes.shape == (3, 4, 4)
  assert codec.decode(codes).shape == (3, 4 * 320)
  assert codec.reconstruct(wav).shape == (3, 1000)
  # Padding only appends zeros after the audio: a causal codec's earlier frames are unchanged.
  np.testing.assert_array_equal(codec.encode(wav[:, :960]), codes[:, :3])


def test_output_does_not_depend_on_future_input(codec):
  hop = codec.config.hop
  wav = tones(1, 20 * hop)
  cut = 12 * hop + 17                                    # inside frame 12
  changed = wav.copy()
  changed[:, cut:] = np.random.default_rng(0).normal(size=changed[:, cut:].shape)
  variables = codec.variables
  embed = lambda x: SoundStreamCodec(codec.config).apply(
      variables, jnp.asarray(x), method=lambda m, w: m.encoder(w))
  before, after = embed(wav), embed(changed)
  # Frame n reads samples up to (n + 1) * hop - 1: frames 0-11 cannot see the change.
  np.testing.assert_array_equal(before[:, :12], after[:, :12])
  assert float(jnp.max(jnp.abs(before[:, 12:] - after[:, 12:]))) > 0
  decoded = SoundStreamCodec(codec.config).apply(variables, jnp.asarray(wav))[0]
  decoded_changed = SoundStreamCodec(codec.config).apply(variables, jnp.asarray(changed))[0]
  # The whole codec: output sample t reads frames <= t // hop, i.e. input before (t//hop+1)*hop.
  np.testing.assert_array_equal(decoded[:, :12 * hop], decoded_changed[:, :12 * hop])


def test_bad_input_is_named(codec):
  wav = tones(2, 640)
  with pytest.raises(ValueError, match=r"NaN or Inf samples \(batch rows \[1\]\)"):
    codec.encode(np.stack([wav[0], np.full(640, np.nan, np.float32)]))
  with pytest.raises(ValueError, match=r"must be \[batch, samples\], got shape \(640,\)"):
    codec.encode(wav[0])
  with pytest.raises(ValueError, match=r"got shape \(1, 2, 640\)"):
    codec.encode(wav[None])
  with pytest.raises(ValueError, match="n_q=5 must be in"):
    codec.encode(wav, n_q=5)
  with pytest.raises(ValueError, match=r"codes outside \[0, 64\)"):
    codec.decode(np.full((1, 2, 4), 64, np.int32))
  with pytest.raises(ValueError, match="must be \\[batch, frames, levels\\]"):
    codec.decode(np.zeros((2, 4), np.int32))


def test_gan_step_updates_both_networks_after_the_warm_up_and_the_codebooks():
  model = tiny_model(discriminator_start_step=1)
  variables = nn.meta.unbox(model.get_initial_variables(key(0), {"audio": (4, 3200)}))
  optimizer = model.make_optimizer(lambda: optax.adam(1e-3), None)
  params = variables.pop("params")
  state = TrainState.create(params, optimizer.init(params), variables)
  step = jax.jit(lambda s, b: model.train_step(s, b, key(1), optimizer))
  batch = {"audio": jnp.asarray(tones(4, 3200))}
  first, metrics = step(state, batch)
  changed = lambda a, b: any(bool(jnp.any(x != y)) for x, y in
                             zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert changed(first.params["generator"], state.params["generator"])
  assert not changed(first.params["discriminator"], state.params["discriminator"])
  assert float(metrics["discriminator_active"]) == 0.0
  assert int(first.model_state[rvq.COLLECTION]["quantizer"]["initialized"]) == 1
  second, metrics = step(first, batch)
  assert float(metrics["discriminator_active"]) == 1.0
  assert changed(second.params["discriminator"], first.params["discriminator"])
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert int(second.nonfinite_step) == -1 and int(second.step) == 2


def test_warm_up_phase_is_the_masked_step_without_the_discriminators():
  model = tiny_model(discriminator_start_step=2)
  assert [model.train_phase(s) for s in range(3)] == [soundstream_gan.WARM_UP] * 2 + [None]
  assert tiny_model(adversarial_weight=0.0, feature_weight=0.0).train_phase(0) is None
  variables = nn.meta.unbox(model.get_initial_variables(key(0), {"audio": (4, 3200)}))
  optimizer = model.make_optimizer(lambda: optax.adam(1e-3), None)
  params = variables.pop("params")
  state = TrainState.create(params, optimizer.init(params), variables)
  batch = {"audio": jnp.asarray(tones(4, 3200))}
  masked, masked_metrics = jax.jit(lambda s, b: model.train_step(s, b, key(1), optimizer))(
      state, batch)
  warm, warm_metrics = jax.jit(lambda s, b: model.train_step(
      s, b, key(1), optimizer, phase=soundstream_gan.WARM_UP))(state, batch)
  assert sorted(warm_metrics) == sorted(masked_metrics)
  assert float(warm_metrics["discriminator_active"]) == 0.0
  for a, b in zip(jax.tree.leaves(warm.params), jax.tree.leaves(masked.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_missing_or_misshapen_audio_feature_is_named():
  model = tiny_model()
  with pytest.raises(ValueError, match="needs batch feature 'audio'"):
    model.get_initial_variables(jax.random.key(0), {"targets": (2, 640)})
  with pytest.raises(ValueError, match="multiple of the hop 320"):
    model.get_initial_variables(jax.random.key(0), {"audio": (2, 1000)})


def test_microbatches_step_the_codebooks_once_per_microbatch():
  model = tiny_model(adversarial_weight=0.0, feature_weight=0.0)
  variables = nn.meta.unbox(model.get_initial_variables(key(0), {"audio": (4, 1280)}))
  optimizer = model.make_optimizer(lambda: optax.sgd(1e-3), None)
  params = variables.pop("params")
  state = TrainState.create(params, optimizer.init(params), variables)
  batch = {"audio": jnp.asarray(tones(4, 1280))}
  new, metrics = jax.jit(lambda s, b: model.train_step(s, b, key(1), optimizer,
                                                       num_microbatches=2))(state, batch)
  assert np.isfinite(float(metrics["loss"])) and int(new.step) == 1

  @jax.jit
  def sequential(codebooks):
    # The same two strided microbatches, one EMA step each, with the step's rng per microbatch.
    step_rng = jax.random.fold_in(key(1), 0)
    micro = jnp.swapaxes(batch["audio"].reshape(-1, 2, 1280), 0, 1)
    for i in range(2):
      _, updated = model.generator.apply(
          {"params": params["generator"], rvq.COLLECTION: codebooks}, micro[i], train=True,
          rngs={"quantizer": jax.random.fold_in(step_rng, i)}, mutable=[rvq.COLLECTION])
      codebooks = updated[rvq.COLLECTION]
    return codebooks

  expected = sequential(state.model_state[rvq.COLLECTION])
  for got, want in zip(jax.tree.leaves(new.model_state[rvq.COLLECTION]),
                       jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="not divisible by num_microbatches 3"):
    model.train_step(state, batch, key(1), optimizer, num_microbatches=3)


def test_gan_optimizer_moments_shard_like_their_parameters():
  # optax.tree_map_params cannot initialise a multi_transform on its placeholder; partitioning
  # falls back to matching key paths. Checked on specs (a 1-device mesh still names its axes).
  from musiclm_jax.core import partitioning  # pylint: disable=g-import-not-at-top
  model = tiny_model()
  optimizer = model.make_optimizer(lambda: optax.adam(1e-3), None)
  mesh = partitioning.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  boxed = {"generator": {"w": nn.Partitioned(jnp.zeros((4, 8)), ("embed", "mlp"))},
           "discriminator": {"v": nn.Partitioned(jnp.zeros((8,)), ("mlp",))}}
  params = nn.meta.unbox(boxed)
  param_shardings = partitioning.logical_to_shardings(mesh, boxed, partitioning.DEFAULT_RULES)
  shardings = partitioning.opt_state_shardings(
      optimizer, jax.eval_shape(optimizer.init, params), param_shardings, mesh)
  specs = {jax.tree_util.keystr(path): s.spec for path, s in
           jax.tree_util.tree_leaves_with_path(shardings)}
  moments = {k: v for k, v in specs.items() if ".mu" in k or ".nu" in k}
  assert len(moments) == 4
  for path, spec in moments.items():
    expected = ("fsdp", "model") if path.endswith("['w']") else ("model",)
    assert tuple(spec) == expected, path
  assert all(tuple(s) == () for k, s in specs.items() if k.endswith(".count"))
