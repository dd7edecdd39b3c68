"""Data: TFDS builders (Free Music Archive, MusicCaps, synthetic captioned music), seqio tasks
of raw audio, of token streams (cached with the frozen tokenizers) and of the three stages."""
