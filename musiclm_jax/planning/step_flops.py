"""Matmul and convolution FLOPs of a step, counting every trip of its loops.

XLA's `cost_analysis()` counts a while loop's body once, whatever its trip count, so a model
whose layers run under `nn.scan` (or whose attention scans over key blocks, or whose batch is
split into microbatches) reports a fraction of its work. This walks the step's jaxpr instead:
each `dot_general` costs 2 x (output elements) x (contracted elements), a convolution
2 x (output elements) x (kernel elements per output feature) divided by its input dilation
(the zeros a transposed convolution skips), a scan its body times its length, a Pallas
kernel its block body times its grid, a shard_map its per-device body times the devices, and
the backward pass of rematerialised code its recomputation too. Elementwise work is left out: it
is small beside the matmuls and not in the analytic 6 x N x tokens either. The count is of
the program as written, before XLA's own optimisations.
"""
import math

import jax
from jax.extend import core


class UnknownTripCount(ValueError):
  """A while loop (not a scan) whose trip count depends on the data."""


def _sub_jaxprs(params):
  for value in params.values():
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if isinstance(v, core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, core.Jaxpr):
        yield v


def jaxpr_flops(jaxpr: core.Jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name, params = eqn.primitive.name, eqn.params
    out = eqn.outvars[0].aval.shape if eqn.outvars else ()
    if name == "dot_general":
      (lhs_contracting, _), _ = params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(out) * math.prod(lhs[d] for d in lhs_contracting)
    elif name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      out_feature_dim = params["dimension_numbers"].rhs_spec[0]
      total += (2.0 * math.prod(out) * math.prod(rhs) / rhs[out_feature_dim]
                / math.prod(params["lhs_dilation"]))
    elif name == "scan":
      total += params["length"] * jaxpr_flops(params["jaxpr"].jaxpr)
    elif name == "while":
      if jaxpr_flops(params["body_jaxpr"].jaxpr) > 0:
        raise UnknownTripCount("a while loop with matmuls in its body: its trip count is not "
                               "known before it runs")
    elif name == "cond":
      total += max(jaxpr_flops(branch.jaxpr) for branch in params["branches"])
    elif name == "pallas_call":  # a kernel body is written for one block: once per grid point
      total += math.prod(params["grid_mapping"].grid) * jaxpr_flops(params["jaxpr"])
    elif name == "shard_map":  # its body sees one device's shard: once per device
      mesh = params["mesh"]
      manual = params.get("newly_manual_axes") or mesh.axis_names
      total += math.prod(mesh.shape[a] for a in manual) * jaxpr_flops(params["jaxpr"])
    else:  # jit, remat, custom_jvp / custom_vjp calls, shard_map: their bodies run once
      total += sum(jaxpr_flops(sub) for sub in _sub_jaxprs(params))
  return total


def count(fn, *args) -> float:
  """FLOPs of `fn(*args)` (arrays or ShapeDtypeStructs), for the whole global computation."""
  return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)
