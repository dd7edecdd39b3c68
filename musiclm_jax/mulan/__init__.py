"""MuLan: the audio tower and the BERT text tower in one embedding space (contrastive), its
WordPiece tokenizer and pretrained MiniLM weights, and the RVQ that turns an embedding into
MuLan tokens."""
