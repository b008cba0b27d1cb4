"""Scoring a trained reward model, analysing and plotting its scores, and summing up a run."""
