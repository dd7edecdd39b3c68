r"""Fits the semantic k-means on w2v-BERT features (gin entry point, t5x-style flags).

  python -m musiclm_jax.fit_kmeans \
    --gin_file=models/w2v_bert/tiny.gin --gin_file=runs/fit_kmeans.gin \
    --gin_file=tasks/w2v_bert_synthetic_tones.gin --gin.MODEL_DIR="'/tmp/w2v_bert_tiny'"

Reads the newest w2v-BERT checkpoint in MODEL_DIR and writes `{MODEL_DIR}/semantic_kmeans.npz`
(centroids, per-dimension normalisation statistics, feature layer); the steps are in
`semantic_tokenizer.fit_kmeans`. Re-running overwrites the file atomically. A bad binding,
missing checkpoint or data problem exits with status 2 and one line naming the cause.
"""
import sys

import gin
from absl import app, flags, logging

from musiclm_jax import gin_utils, semantic_tokenizer
from musiclm_jax.partitioning import MeshError

# Mistakes in the run's configuration or data; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, MeshError)

gin_utils.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    gin_utils.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
    logging.info("Gin config:\n%s", gin.config_str())
    path = semantic_tokenizer.fit_kmeans()
  except USER_ERRORS as error:
    print(f"musiclm_jax.fit_kmeans: error: {gin_utils.one_line(error)}", file=sys.stderr)
    sys.exit(2)
  print(f"musiclm_jax.fit_kmeans: wrote {path}")


if __name__ == "__main__":
  app.run(main, argv=gin_utils.rewrite_gin_args(sys.argv))
