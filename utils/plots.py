"""Pictures of reward scores, for where people would rather look than read."""
from __future__ import annotations

from pathlib import Path

import torch


def score_histogram(chosen: torch.Tensor, rejected: torch.Tensor, path: str | Path, title: str) -> Path:
    """Chosen and rejected scores on shared bins: well-separated humps mean a usable reward."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    both = torch.cat([chosen, rejected])
    bins = torch.linspace(both.min().item(), both.max().item() + 1e-9, 41).tolist()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.hist(chosen.tolist(), bins=bins, alpha=0.6, color="tab:green", label=f"chosen (mean {chosen.mean():.2f})")
    ax.hist(rejected.tolist(), bins=bins, alpha=0.6, color="tab:red", label=f"rejected (mean {rejected.mean():.2f})")
    ax.set_xlabel("reward score")
    ax.set_ylabel("texts")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
