"""Rows from every source, formatted as text and tokenized: sources, splits, templates, encoding, batches, cache."""
