"""The three MusicLM stages (semantic, coarse, fine): the token layout, the decoder-only
Transformer, the prefix-LM stage model, KV-cached sampling and long generation."""
