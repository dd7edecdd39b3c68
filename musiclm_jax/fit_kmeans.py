r"""Fits the semantic k-means on w2v-BERT features (gin entry point, t5x-style flags).

  python -m musiclm_jax.fit_kmeans \
    --gin_file=models/w2v_bert/tiny.gin --gin_file=runs/fit_kmeans.gin \
    --gin_file=tasks/w2v_bert_synthetic_tones.gin --gin.MODEL_DIR="'/tmp/w2v_bert_tiny'"

Reads the newest w2v-BERT checkpoint in MODEL_DIR and writes `{MODEL_DIR}/semantic_kmeans.npz`
(centroids, per-dimension normalisation statistics, feature layer); the steps are in
`semantic_tokenizer.fit_kmeans`, and its path is printed. Re-running overwrites the file
atomically. A bad binding, missing checkpoint or data problem exits with status 2 and one
line naming the cause.
"""
from musiclm_jax.core import gin_utils
from musiclm_jax.semantic import semantic_tokenizer

if __name__ == "__main__":
  gin_utils.run_main("musiclm_jax.fit_kmeans", semantic_tokenizer.fit_kmeans)
