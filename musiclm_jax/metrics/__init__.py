"""Evaluation metrics, one family per file (codec reconstruction in `codec.py`)."""
