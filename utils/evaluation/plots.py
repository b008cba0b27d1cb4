"""Pictures of reward scores, for where people would rather look than read."""
from __future__ import annotations

from pathlib import Path

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig: object, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def score_histogram(chosen: torch.Tensor, rejected: torch.Tensor, path: str | Path, title: str) -> Path:
    """Chosen and rejected scores on shared bins: well-separated humps mean a usable reward."""
    plt = _pyplot()
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
    return _save(fig, path)


def training_curves(metrics: dict[str, list[dict]], path: str | Path) -> Path:
    """Each step's training loss per optimizer step, with its evaluations on top: a run that diverged, stalled or
    overfit shows at once. A step-3 run that samples plots its reward instead, whose loss says little."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), dpi=120, squeeze=False)
    for ax, (name, rows) in zip(axes[0], metrics.items()):
        train = [r for r in rows if r["split"] == "train"]
        evals = [r for r in rows if r["split"] == "eval"]
        key = "reward" if train and "reward" in train[0] else "loss"
        held = key if not evals or key in evals[0] else f"pair_{key}"  # DPO's held-out figures are its pairs'
        ax.plot([r["step"] for r in train], [r[key] for r in train], color="tab:blue", alpha=0.5, lw=1,
                label=f"train {key} (per step)")
        ax.plot([r["step"] for r in evals], [r[held] for r in evals], "o-", color="tab:orange",
                label=f"held-out {held}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key)
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def subset_accuracy_bars(subsets: list[str], accuracies: dict[str, list[float]], path: str | Path, title: str
                         ) -> Path:
    """Each subset's accuracy as a horizontal bar, one bar per model: where one model falls behind shows at once."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 2 + 0.3 * len(subsets) * len(accuracies)), dpi=120)
    height = 0.8 / len(accuracies)
    for i, (label, values) in enumerate(accuracies.items()):
        ax.barh([y + i * height for y in range(len(subsets))], values, height=height, label=label)
    ax.set_yticks([y + height * (len(accuracies) - 1) / 2 for y in range(len(subsets))], subsets)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (ties wrong)")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / len(subsets)), ncol=len(accuracies),
              frameon=False)
    fig.tight_layout()
    return _save(fig, path)
