"""Semantic tokens: w2v-BERT (conformer; contrastive + masked prediction), its losses and
target quantizer, span masking, and the k-means that turns its features into 25 Hz ids."""
