"""Test-wide settings: quiet TensorFlow, keep it off accelerators, one CPU device by default."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")



