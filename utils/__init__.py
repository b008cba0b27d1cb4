"""The library that every step shares: flags, data, model, DeepSpeed engine, losses, export."""
