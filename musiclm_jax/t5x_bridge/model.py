"""A stage as a t5x model: what `t5x.train` and `t5x.infer` call, around the same stage model
and Transformer our own trainer and `infer` use.

Three things differ from t5x's own DecoderOnlyModel, each because the stage needs it:
- parameters carry their logical axes in a `params_axes` collection (t5x's convention), read
  off the `nn.with_logical_partitioning` boxes our layers use;
- every forward gets the prefix-LM features (`decoder_causal_attention`): the conditioning is
  a bidirectional prefix, as our trainer trains it;
- predicting is our stage model's: its prefill fills the KV cache (t5x's prefill does not
  pass `decode=True`), classifier-free guidance and the per-position RVQ-level masks apply.
Training adds the conditioning dropout that classifier-free guidance needs; the loss and its
metrics are t5x's.
"""
from typing import Any, Mapping, Optional

import flax
import flax.linen as nn
import gin
import jax
import optax
import seqio
from flax.linen import partitioning as flax_partitioning
from t5x import models as t5x_models
from t5x import optimizers as t5x_optimizers

from musiclm_jax.data import stage_tasks
from musiclm_jax.stages.stage_model import DecoderOnlyModel


def params_axes(boxed_params) -> dict:
  """t5x's `params_axes` collection for boxed parameters: `<name>_axes` leaves holding the
  logical axis names (an unboxed leaf is replicated: None per dimension)."""
  def names(leaf):
    if nn.meta.is_axis_metadata(leaf):
      return flax_partitioning.AxisMetadata(names=tuple(leaf.get_partition_spec()))
    return flax_partitioning.AxisMetadata(names=(None,) * leaf.ndim)

  flat = flax.traverse_util.flatten_dict(
      jax.tree.map(names, flax.core.unfreeze(boxed_params), is_leaf=nn.meta.is_axis_metadata))
  return flax.traverse_util.unflatten_dict(
      {(*path[:-1], f"{path[-1]}_axes"): axes for path, axes in flat.items()})


@gin.configurable(module="t5x_bridge")
def optax_optimizer(optimizer: optax.GradientTransformation) -> t5x_optimizers.OptaxWrapper:
  """One of our optax optimizers (`optimizers.create`) as t5x's optimizer_def. Its schedule
  sets the learning rate; t5x's `Trainer.learning_rate_fn` is only what t5x logs."""
  return t5x_optimizers.OptaxWrapper(optimizer)


@gin.configurable(module="t5x_bridge")
class StageModel(t5x_models.DecoderOnlyModel):
  """`model`: the configured stage model (`@stage_model.DecoderOnlyModel()`): its module,
  token layout, z-loss, conditioning dropout and default decoder params."""
  FEATURE_CONVERTER_CLS = seqio.PrefixLMFeatureConverter

  def __init__(self, model: DecoderOnlyModel, optimizer_def,
               loss_normalizing_factor: Any = "NUM_REAL_TARGET_TOKENS"):
    if model.stage is None:
      raise ValueError("t5x_bridge.StageModel needs a stage model with its token layout "
                       "(stage_model.DecoderOnlyModel.stage = @token_layout.stage_vocabulary())")
    self.stage_model = model
    vocabulary = stage_tasks.stage_output_features(
        model.stage.name, model.stage.layout)["targets"].vocabulary
    super().__init__(module=model.module, vocabulary=vocabulary, optimizer_def=optimizer_def,
                     decode_fn=model.decode_fn, inputs_bidirectional_attention=True,
                     z_loss=model.z_loss, loss_normalizing_factor=loss_normalizing_factor)

  @property
  def stage(self):
    return self.stage_model.stage

  def get_initial_variables(self, rng, input_shapes: Mapping[str, Any],
                            input_types: Optional[Mapping[str, Any]] = None):
    boxed = self.stage_model.get_initial_variables(rng, input_shapes, input_types)
    variables = dict(nn.meta.unbox(boxed))
    variables["params_axes"] = params_axes(boxed["params"])
    return flax.core.freeze(variables)

  def _compute_logits(self, params, batch, dropout_rng=None, mutable=False,
                      other_variables=None):
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
    # Scores see the MuLan levels training conditions on (a no-op with all of them; loss_fn
    # has already blanked its random ones).
    batch, _ = self.stage_model.training_conditioning(batch, None)
    return self.module.apply(
        {"params": params, **(other_variables or {})}, batch["decoder_input_tokens"],
        batch["decoder_target_tokens"], decoder_segment_ids=batch.get("decoder_segment_ids"),
        decoder_positions=batch.get("decoder_positions"),
        decoder_causal_attention=batch.get("decoder_causal_attention"), rngs=rngs,
        decode=False, enable_dropout=rngs is not None, mutable=mutable)

  def loss_fn(self, params, batch, dropout_rng):
    batch, dropout_rng = self.stage_model.training_conditioning(batch, dropout_rng)
    return super().loss_fn(params, batch, dropout_rng)

  def predict_batch_with_aux(self, params, batch, rng=None, *, return_all_decodes: bool = False,
                             num_decodes: int = 1, decoder_params=None):
    """Our stage model's sampling (guidance, level masks) in t5x's conventions: the
    rng may come in `decoder_params['decode_rng']`, and all decodes are sorted by score,
    best last."""
    decoder_params = dict(decoder_params or {})
    param_rng = decoder_params.pop("decode_rng", None)
    if rng is not None and param_rng is not None:
      raise ValueError("got an rng both as `rng` and as decoder_params['decode_rng']")
    rng = rng if rng is not None else param_rng
    decodes, aux = self.stage_model.predict_batch_with_aux(
        params, batch, rng, num_decodes=num_decodes, decoder_params=decoder_params,
        return_all_decodes=True)
    order = jax.numpy.argsort(aux["scores"], axis=-1)
    decodes = jax.numpy.take_along_axis(decodes, order[..., None], axis=1)
    scores = jax.numpy.take_along_axis(aux["scores"], order, axis=1)
    if return_all_decodes:
      return decodes, {"scores": scores}
    return decodes[:, -1], {"scores": scores[:, -1]}
