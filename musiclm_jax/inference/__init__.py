"""Inference: text -> audio through the six trained parts (MusicLM pipeline, prompts files,
listening page) and token-level batch inference with one stage."""
