"""What a training process pays before its first step: compiling the state's initialisation.

Run:  .venv/bin/python bench/init_compile.py [--model soundstream|w2v_bert]

Builds the tiny model of `musiclm_jax/gin/models/<model>/tiny.gin` on a 1-device mesh, as
`trainer.train` does (`trainer.shard_model`: parameters, optimizer state, shardings), then
compiles the initialisation twice: jitted with XLA's default options, and as `shard_model`
jits it on CPU, with `xla_backend_optimization_level` 0 (the program runs once).
Prints each compile's seconds and the run's. Input: 8 x 1 s of 16 kHz audio.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import gin
import jax
import optax

from musiclm_jax.core import partitioning, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="soundstream", choices=("soundstream", "w2v_bert"))
  args = parser.parse_args()
  gin.add_config_file_search_path(os.path.join(REPO, "musiclm_jax", "gin"))
  gin.parse_config_files_and_bindings([f"models/{args.model}/tiny.gin"], [])
  model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  shapes = {"audio": jax.ShapeDtypeStruct((8, 16000), "float32")}
  mesh, rules = partitioning.create_mesh(), partitioning.logical_axis_rules()
  optimizer = model.make_optimizer(lambda: optax.adam(1e-3), None)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    setup = trainer.shard_model(model, optimizer, shapes, mesh, rules)
    key = jax.random.key(0)
    print(f"tiny {args.model}: initialisation of {len(jax.tree.leaves(setup.state_shapes))} "
          f"state arrays, jax {jax.__version__} on {jax.devices()[0].platform}")
    # setup.init_fn is jitted with the options; the same function jitted plainly is the default.
    for name, init in (("default", jax.jit(setup.init_fn.__wrapped__)),
                       ("backend level 0", setup.init_fn)):
      lowered = init.lower(key)
      start = time.perf_counter()
      compiled = lowered.compile()
      compile_s = time.perf_counter() - start
      start = time.perf_counter()
      jax.block_until_ready(compiled(key))
      print(f"{name:>16}: compile {compile_s:5.1f} s, run {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
  main()
