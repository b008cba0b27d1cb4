"""The one DeepSpeed engine and training loop, with its config, checkpoints, guards, run setup and logs."""
