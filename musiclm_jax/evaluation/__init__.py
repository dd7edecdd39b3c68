"""Evaluation of generated audio against a reference split: FAD, classifier KL, MuLan cycle
consistency, codec reconstruction metrics, and the embedders behind them (musicnn, VGGish)."""
