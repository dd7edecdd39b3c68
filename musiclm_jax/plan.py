r"""Does a configured model fit a TPU slice, and how fast could it step? Answered on a CPU box.

  python -m musiclm_jax.plan \
    --gin_file=models/semantic/paper.gin --gin_file=runs/plan.gin \
    --gin.planning.plan.slices="['v4-32', 'v4-128', 'v5e-256']"

Ahead-of-time compiles the run's real train step (trainer.jit_train_step, with the run's mesh
binding `partitioning.create_mesh.mesh_shape` and logical rules) and, for models that
generate, the sampling step, for each slice; prints a markdown table of per-chip HBM (XLA's
arguments / outputs / temporaries), headroom, compiled vs analytic 6·N·tokens FLOPs, the ideal
step time at the chip's peak, and for a step that does not fit, the knob that would fix it.
Needs libtpu (`pip install -e '.[tpu]'`); allocates nothing. With
`aot.plan.output_file`, rows are also appended there as JSON lines; `--render=FILE`
prints such a file as one table (launch/plan_paper.sh builds the table of docs/pods.md that way).
"""
import os
import sys

# The slices' devices are compile-only and the host backend must be the CPU, even on a TPU VM
# (where a TPU backend would claim the chips): set before JAX picks a backend.
os.environ["JAX_PLATFORMS"] = "cpu"

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from musiclm_jax.core import gin_utils  # pylint: disable=wrong-import-position
from musiclm_jax.planning import plan_table, aot

flags.DEFINE_string("render", None, "Print a JSON-lines file written by earlier plans "
                    "(aot.plan.output_file) as one table, and exit.")


def main() -> None:
  if any(arg.startswith("--render") for arg in sys.argv[1:]):
    flags.FLAGS(sys.argv)
    print(plan_table.render(flags.FLAGS.render))
  else:
    # No jax.distributed: planning is one process that owns no accelerator.
    gin_utils.run_main("musiclm_jax.plan", aot.plan, multi_process=False)


if __name__ == "__main__":
  main()
