"""Planning on a CPU machine: ahead-of-time compiles of a model's real step for a TPU slice,
per-chip memory and FLOPs, and the plan table."""
