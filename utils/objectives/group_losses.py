"""The GRPO family's maths (GRPO, DAPO, Dr. GRPO): advantages from each prompt's group of K rewards, the per-token
clipped surrogate with asymmetric clipping and the k3 KL penalty, the aggregations that tell the variants apart,
and the groups that carry no signal. Conventions follow TRL's GRPOTrainer (1.16.0), which the tests check against."""
from __future__ import annotations

import torch

from utils.objectives.losses import k3

STD_EPS = 1e-4  # added to the std before dividing, as TRL: a group of equal rewards gets advantages 0, not NaN
SCALES = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")


def group_advantages(rewards: torch.Tensor, k: int, scale: str, batch_std: float | torch.Tensor | None = None
                     ) -> torch.Tensor:
    """A = r - the mean of its group's K rewards (rows prompt-major), then divided by, per `scale`: "group", the
    group's std + 1e-4 (GRPO: every group's spread made one); "batch", the std of all the step's rewards + 1e-4,
    so a group that barely differs keeps small advantages; "none" (Dr. GRPO): nothing, so a prompt that is too easy
    or too hard does not weigh more. Stds are unbiased (n - 1), as TRL's. `batch_std`: the std of every process's
    rewards, which the caller gathers; it defaults to this process's."""
    if k < 2:
        raise ValueError(f"group_advantages: a group needs K >= 2 answers for a baseline and a std, not {k}")
    grouped = rewards.view(-1, k)
    advantages = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    if scale == "group":
        return advantages / (grouped.std(dim=1).repeat_interleave(k) + STD_EPS)
    if scale == "batch":
        return advantages / ((rewards.std() if batch_std is None else batch_std) + STD_EPS)
    if scale == "none":
        return advantages
    raise ValueError(f"group_advantages: scale must be one of {', '.join(SCALES)}, not {scale!r}")


def zero_variance_groups(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """(groups,) bool: the prompts whose K rewards are all equal, whose advantages are all 0 and so teach nothing
    (DAPO's dynamic sampling drops them)."""
    grouped = rewards.view(-1, k)
    return (grouped == grouped[:, :1]).all(dim=1)


def clipped_token_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, ref_log_probs: torch.Tensor | None,
                       advantages: torch.Tensor, mask: torch.Tensor, eps_low: float, eps_high: float, beta: float,
                       delta: float | None = None, kl_times_ratio: bool = False
                       ) -> tuple[torch.Tensor, dict[str, float]]:
    """Per token (rows, T), zero off `mask`: -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) + beta k3, with
    rho = pi / pi_old (`old_log_probs`: the sampling policy's, detached), one advantage per answer, and
    k3 = exp(ref - logp) - (ref - logp) - 1.

    eps_high > eps_low (DAPO's clip-higher) lets an unlikely token that helped grow further before its gradient
    stops, which keeps the policy exploring. `delta` (INTELLECT-2's two-sided clipping; above 1 + eps_high) caps rho
    in the unclipped term, bounding the loss of a negative-advantage token whose ratio ran away. k3's gradient alone
    is, in expectation, that of KL(pi_ref || pi); `kl_times_ratio` weighs k3 by rho (TRL's use_bias_correction_kl),
    whose gradient is that of KL(pi || pi_ref), the divergence k3 estimates, also off-policy.

    Also, over the answer tokens: clip_low, the share where rho < 1 - eps_low with A < 0, clip_high, where
    rho > 1 + eps_high with A > 0 (where the clip takes the gradient away: TRL's clip_ratio/low_mean and
    high_mean), clip_region, either (region_mean), and with a reference, kl_k3_token, the mean KL term (TRL's kl)."""
    if beta != 0 and ref_log_probs is None:
        raise ValueError("clipped_token_loss: beta != 0 needs the reference's log-probabilities")
    ratio = (log_probs - old_log_probs).exp()
    adv = advantages[:, None]
    unclipped = ratio if delta is None else ratio.clamp(max=delta)
    per_token = -torch.min(unclipped * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    tokens = mask.sum().clamp(min=1)
    low = (ratio < 1 - eps_low) & (adv < 0)
    high = (ratio > 1 + eps_high) & (adv > 0)
    stats = {"clip_low": (low * mask).sum() / tokens, "clip_high": (high * mask).sum() / tokens,
             "clip_region": ((low | high) * mask).sum() / tokens}
    if ref_log_probs is not None:
        kl = k3(log_probs, ref_log_probs) * (ratio if kl_times_ratio else 1)
        per_token = per_token + beta * kl
        stats["kl_k3_token"] = (kl.detach() * mask).sum() / tokens
    return per_token * mask, {key: value.item() for key, value in stats.items()}


def aggregate_loss(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, max_answer_len: int | None = None,
                   tokens: float | torch.Tensor | None = None, answers: float | torch.Tensor | None = None,
                   world_size: int = 1) -> torch.Tensor:
    """One process's loss from its per-token losses (zero off `mask`), by `loss_type`:

    - grpo: each answer's mean over its tokens, then the mean over answers: each answer weighs the same, so a long
      answer's tokens weigh less, and a long wrong answer is pushed down less per token than a short one;
    - dapo: the sum over all answer tokens / their count: each token weighs the same;
    - dr_grpo: the sum / (answers x max_answer_len, the constant --max_answer_seq_len): each token weighs the same,
      and the scale does not move with the batch's lengths;
    - bnpo: this process's own token mean, which is dapo on one process without accumulation.

    Several processes: DeepSpeed averages their gradients, so for 1 and N processes to take the same step each
    returns its sum x N / the denominator of the whole batch: `tokens` (dapo), the answer tokens of all processes;
    `answers` (grpo, dr_grpo), the answers of all processes (grpo sums its per-answer means here); `world_size` N.
    They default to this process's and 1. bnpo ignores them: by definition each process's mean, which DeepSpeed
    averages. An answer whose mask is all zero (a masked truncated answer) still counts as one, as in TRL."""
    answers = mask.size(0) if answers is None else answers
    if loss_type == "grpo":
        per_answer = per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return per_answer.sum() * world_size / answers
    if loss_type == "dapo":
        count = mask.sum() if tokens is None else torch.as_tensor(tokens)
        return per_token.sum() * world_size / count.clamp(min=1)
    if loss_type == "dr_grpo":
        if max_answer_len is None:
            raise ValueError("aggregate_loss: dr_grpo divides by the constant max_answer_len, which is missing")
        return per_token.sum() * world_size / (answers * max_answer_len)
    if loss_type == "bnpo":
        return per_token.sum() / mask.sum().clamp(min=1)
    raise ValueError(f"aggregate_loss: loss_type must be one of {', '.join(LOSS_TYPES)}, not {loss_type!r}")
