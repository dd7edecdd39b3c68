"""Test-wide settings: quiet TensorFlow, keep it off accelerators, one CPU device by default."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")





def pytest_collection_modifyitems(config, items):
  """The end-to-end demo (~20 minutes) goes first, so that with two workers
  (scripts/test.sh: pytest-xdist, --no-loadscope-reorder) the other worker runs the rest of
  the suite meanwhile instead of the demo starting last."""
  del config
  items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/demo/test_demo.py::") else 1)
