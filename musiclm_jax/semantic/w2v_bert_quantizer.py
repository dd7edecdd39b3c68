"""w2v-BERT's target quantizer: one Gumbel-softmax codebook (wav2vec 2.0 §3.2, G = 1).

Not the residual VQ of SoundStream / MuLan (layers/rvq.py): this one learns its codebook by
gradient, picks a codeword through a straight-through Gumbel-softmax, and exists only to give
the contrastive and MLM losses discrete targets.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp



class GumbelQuantizer(nn.Module):
  """`[batch, time, embed] -> (quantized [batch, time, codebook_dim], ids [batch, time],
  logits [batch, time, codebook_size])`.

  Training (`stochastic`): ids = argmax(logits + Gumbel noise) from the "gumbel" rng stream;
  the forward pass uses the hard one-hot, the backward pass the softmax at `temperature`.
  Otherwise ids = argmax(logits), no noise.
  """
  codebook_size: int
  codebook_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z, *, temperature, stochastic: bool):
    # Unit-variance weights, not fan-in scaled (wav2vec 2.0's init): the logits then have a
    # spread of ~sqrt(embed) and dominate the Gumbel noise from step 0, so the first targets
    # are a random-projection hash of the input, which the context can learn to predict,
    # rather than noise, which it cannot.
    kernel = self.param(
        "logits_kernel", nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                      ("embed", "vocab")),
        (z.shape[-1], self.codebook_size), self.param_dtype)
    logits = jnp.einsum("bte,ev->btv", jnp.asarray(z, self.dtype),
                        jnp.asarray(kernel, self.dtype)).astype(jnp.float32)
    logits = nn.with_logical_constraint(
        logits, ("activation_batch", "activation_length", "activation_vocab"))
    codebook = self.param(
        "codebook", nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                 ("vocab", "codebook_dim")),
        (self.codebook_size, self.codebook_dim), self.param_dtype)
    if stochastic:
      noisy = logits + jax.random.gumbel(self.make_rng("gumbel"), logits.shape)
      soft = jax.nn.softmax(noisy / temperature, axis=-1)
      ids = jnp.argmax(noisy, axis=-1)
      hard = jax.nn.one_hot(ids, self.codebook_size, dtype=soft.dtype)
      weights = hard + soft - jax.lax.stop_gradient(soft)  # straight-through
    else:
      ids = jnp.argmax(logits, axis=-1)
      weights = jax.nn.one_hot(ids, self.codebook_size, dtype=jnp.float32)
    quantized = jnp.einsum("btv,vd->btd", weights.astype(self.dtype),
                           jnp.asarray(codebook, self.dtype))
    return quantized, ids.astype(jnp.int32), logits
