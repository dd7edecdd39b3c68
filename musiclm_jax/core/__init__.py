"""What every model and run shares: the one trainer, the model interface, mesh and partitioning
rules, checkpoints, the input pipeline, optimizers, multi-process start-up, gin command lines,
audio I/O and atomic file writes."""
