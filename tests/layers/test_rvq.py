"""The residual vector quantizer: residuals shrink per level, EMA, dead codes, quantizer dropout,
k-means init, straight-through gradients and the codebook state's logical axes."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.core import partitioning
from musiclm_jax.layers import rvq

LEVELS, SIZE, DIM = 4, 16, 8


def _data(n=512, seed=0):
  """Clustered points (so k-means has structure to find) plus noise, `[n, DIM]`."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(8, DIM)) * 3.0
  return jnp.asarray(centres[rng.integers(0, 8, n)] + rng.normal(size=(n, DIM)), jnp.float32)


def _module(**overrides):
  kwargs = dict(num_levels=LEVELS, codebook_size=SIZE, dim=DIM, dead_code_threshold=1.0,
                quantizer_dropout_rate=0.0)
  kwargs.update(overrides)
  return rvq.ResidualVectorQuantizer(**kwargs)


def _train_apply(module, variables, x, seed=0):
  """One training call: returns (outputs, updated codebooks)."""
  return module.apply(variables, x, train=True, rngs={"quantizer": jax.random.key(seed)},
                      mutable=[rvq.COLLECTION])


def test_residual_norm_decreases_with_each_level():
  x = _data()
  state = rvq.fit_state(x, LEVELS, SIZE, jax.random.key(0))
  errors = [float(jnp.mean(jnp.sum(jnp.square(x - rvq.quantize(state, x, n_q)[0]), -1)))
            for n_q in range(1, LEVELS + 1)]
  energy = float(jnp.mean(jnp.sum(jnp.square(x), -1)))
  assert errors[0] < 0.5 * energy
  assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors


def test_quantized_vector_is_the_sum_of_its_codes_entries():
  x = _data(64)
  state = rvq.fit_state(x, LEVELS, SIZE, jax.random.key(0))
  for n_q in (1, 3):
    quantized, codes, metrics = rvq.quantize(state, x, n_q)
    assert codes.shape == (64, n_q) and codes.dtype == jnp.int32
    np.testing.assert_allclose(rvq.codes_to_vectors(state, codes), quantized, atol=1e-5)
    assert 1.0 <= float(metrics["perplexity"]) <= SIZE


def test_kmeans_initialises_from_the_first_batch_only():
  module = _module(dead_code_threshold=0.0)
  x = _data(256)[None]                                           # [1, 256 frames, DIM]
  variables = nn.meta.unbox(module.init(jax.random.key(0), x))
  assert int(variables[rvq.COLLECTION]["initialized"]) == 0
  _, updated = _train_apply(module, variables, x)
  state = nn.meta.unbox(updated[rvq.COLLECTION])
  assert int(state["initialized"]) == 1
  # Data-initialised entries quantize the data far better than the random N(0, 1) ones.
  error = lambda state: float(jnp.mean(jnp.square(x[0] - rvq.quantize(state, x[0], 1)[0])))
  assert error(state) < 0.3 * error(variables[rvq.COLLECTION])
  # A second batch updates the entries by EMA only; it does not re-run k-means.
  second = _data(256, seed=1)
  _, again = _train_apply(module, {**variables, **updated}, second[None], seed=1)
  _, codes, residuals = rvq.residual_quantize(state["codebook"], second)
  expected = rvq.ema_update(state, residuals, codes, jnp.ones(codes.shape), decay=0.99)
  np.testing.assert_allclose(nn.meta.unbox(again[rvq.COLLECTION])["codebook"],
                             expected["codebook"], rtol=1e-4, atol=1e-4)


def test_ema_moves_an_entry_towards_the_mean_of_its_residuals():
  state = {"codebook": jnp.zeros((1, 2, 1)), "cluster_size": jnp.ones((1, 2)),
           "embed_sum": jnp.zeros((1, 2, 1)), "initialized": jnp.ones((), jnp.int32)}
  residuals = jnp.array([[[2.0], [4.0], [10.0]]])                # entry 0 gets 2 and 4
  codes = jnp.array([[0, 0, 1]])
  new = rvq.ema_update(state, residuals, codes, jnp.ones((1, 3)), decay=0.5, epsilon=0.0)
  np.testing.assert_allclose(new["cluster_size"], [[1.5, 1.0]])   # .5 * 1 + .5 * count
  np.testing.assert_allclose(new["embed_sum"][0, :, 0], [3.0, 5.0])
  np.testing.assert_allclose(new["codebook"][0, :, 0], [2.0, 5.0])


def test_dead_codes_are_replaced_by_batch_residuals():
  module = _module(dead_code_threshold=1.0)
  x = _data(256)[None]
  variables = nn.meta.unbox(module.init(jax.random.key(0), x))
  state = nn.meta.unbox(variables[rvq.COLLECTION])
  # Level 0: entries 0-7 sit on the data, entries 8-15 far away with no EMA count: dead.
  codebook = state["codebook"].at[0, :8].set(x[0, :8]).at[0, 8:].set(1e3)
  cluster_size = state["cluster_size"].at[:, :8].set(50.0)
  state = dict(state, codebook=codebook, cluster_size=cluster_size,
               embed_sum=codebook * cluster_size[..., None], initialized=jnp.ones((), jnp.int32))
  outputs, updated = _train_apply(module, {rvq.COLLECTION: state}, x)
  new = nn.meta.unbox(updated[rvq.COLLECTION])
  # Every formerly dead entry is now one of this batch's level-0 residuals (the inputs).
  replaced = new["codebook"][0, 8:]
  distance = jnp.min(jnp.sum(jnp.square(replaced[:, None] - x[0][None]), -1), axis=1)
  np.testing.assert_allclose(distance, 0.0, atol=1e-6)
  assert bool(jnp.all(new["cluster_size"][0, 8:] >= 1.0))
  assert float(outputs[2]["metrics"]["replaced_codes"]) >= 8


def test_quantizer_dropout_uses_fewer_levels_per_example():
  # decay 1 and threshold 0 freeze the codebooks, so the forward pass can be checked against
  # the state it started from.
  module = _module(quantizer_dropout_rate=1.0, decay=1.0, dead_code_threshold=0.0)
  x = _data(16 * 8).reshape(16, 8, DIM)                           # 16 examples of 8 frames
  state = rvq.fit_state(x.reshape(-1, DIM), LEVELS, SIZE, jax.random.key(0))
  (quantized, codes, aux), _ = _train_apply(module, {rvq.COLLECTION: state}, x)
  levels = np.asarray(aux["example_levels"])
  assert levels.min() >= 1 and levels.max() <= LEVELS and levels.min() < LEVELS
  assert float(aux["metrics"]["mean_levels"]) < LEVELS
  for example in range(16):
    # Each example is the sum of exactly its first n_q entries: the other levels were dropped.
    expected = rvq.codes_to_vectors(state, codes[example, :, :levels[example]])
    np.testing.assert_allclose(quantized[example], expected, atol=1e-4)
  # Evaluation (train=False) always uses every level unless n_q is given.
  _, eval_codes, eval_aux = module.apply({rvq.COLLECTION: state}, x)
  assert eval_codes.shape == (16, 8, LEVELS)
  assert np.all(np.asarray(eval_aux["example_levels"]) == LEVELS)
  _, two, _ = module.apply({rvq.COLLECTION: state}, x, 2)
  assert two.shape == (16, 8, 2)
  np.testing.assert_array_equal(two, eval_codes[..., :2])


def test_straight_through_gradient_reaches_the_input_unchanged():
  module = _module()
  x = _data(32).reshape(4, 8, DIM)
  variables = nn.meta.unbox(module.init(jax.random.key(0), x))
  weights = jax.random.normal(jax.random.key(1), x.shape)
  grad = jax.grad(lambda x: jnp.sum(module.apply(variables, x)[0] * weights))(x)
  np.testing.assert_allclose(grad, weights, atol=1e-6)


def test_codebook_state_has_logical_axes_and_shards():
  module = _module()
  boxed = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((2, 8, DIM)))
  state = boxed[rvq.COLLECTION]
  assert state["codebook"].names == ("rvq_levels", "codebook_entries", "codebook_dim")
  assert state["cluster_size"].names == ("rvq_levels", "codebook_entries")
  mesh = partitioning.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  shardings = partitioning.logical_to_shardings(mesh, boxed, partitioning.DEFAULT_RULES)
  assert set(shardings[rvq.COLLECTION]) == set(rvq.STATE_AXES)


def test_n_q_outside_the_levels_is_an_error():
  module = _module()
  x = jnp.zeros((1, 4, DIM))
  variables = nn.meta.unbox(module.init(jax.random.key(0), x))
  with pytest.raises(ValueError, match="n_q=5"):
    module.apply(variables, x, 5)
  with pytest.raises(ValueError, match="codes have 5 levels"):
    rvq.codes_to_vectors(nn.meta.unbox(variables[rvq.COLLECTION]), jnp.zeros((4, 5), jnp.int32))
