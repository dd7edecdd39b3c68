"""Shared Flax blocks. Every parameter and main activation carries logical axis names."""
