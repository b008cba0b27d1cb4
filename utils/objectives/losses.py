"""The losses of every step: pairwise reward losses (--loss), step 3's policy-gradient loss, KL estimators, PPO's
advantages and value loss, and the DPO and IPO losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bt_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry: the mean of -log sigmoid(r_chosen - r_rejected)."""
    return -F.logsigmoid(chosen - rejected).mean()


def dschat_loss(values: torch.Tensor, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """DeepSpeed-Chat's loss: per pair, the mean of -log sigmoid(v_chosen - v_rejected) over the tokens from the
    first differing token to the later of the two scored tokens (inclusive).

    `values`, `input_ids` and `positions` hold the chosen rows, then the rejected rows, as collate_pairs lays them out.
    A pair whose token rows are identical contributes its last position only, as in DeepSpeed-Chat.
    """
    n = values.size(0) // 2
    total = values.new_zeros(())
    for i in range(n):
        c_ids, r_ids = input_ids[i], input_ids[n + i]
        differ = (c_ids != r_ids).nonzero()
        if len(differ) == 0:
            start, end = values.size(1) - 1, values.size(1)
        else:
            start, end = differ[0].item(), max(positions[i].item(), positions[n + i].item()) + 1
        total = total - F.logsigmoid(values[i, start:end] - values[n + i, start:end]).mean()
    return total / n


def kl_k1(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per answer, the summed log-ratio to the reference over its actions: the KL estimate the penalty uses. A
    single answer's value can be negative; its expectation cannot."""
    return ((log_probs - ref_log_probs) * mask).sum(dim=1)


def k3(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """Per token, (r - 1) - log r with r = pi_ref / pi: never negative, and unbiased for KL(pi || pi_ref) when the
    token is sampled from pi."""
    log_ratio = ref_log_probs - log_probs
    return log_ratio.exp() - 1 - log_ratio


def kl_k3(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per answer, the summed k3 over its actions: never negative, so it shows drift that k1's noise hides."""
    return (k3(log_probs, ref_log_probs) * mask).sum(dim=1)


def clipped_policy_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, cliprange: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The summed -min(rho A, clip(rho, 1 - eps, 1 + eps) A) over actions, with rho = pi / pi_old and one advantage
    per answer (rows,) or per action (rows, width); also the clipped share of actions and the ratios. Summed, not
    averaged: the caller divides by the actions of the whole optimizer step."""
    ratio = (log_probs - old_log_probs).exp()
    adv = advantages if advantages.dim() == 2 else advantages[:, None]
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - cliprange, 1 + cliprange) * adv)
    clipped = ((ratio - 1).abs() > cliprange).float()
    return (per_token * mask).sum(), (clipped * mask).sum() / mask.sum().clamp(min=1), ratio


def token_rewards(scores: torch.Tensor, log_probs: torch.Tensor, ref_log_probs: torch.Tensor, mask: torch.Tensor,
                  kl_ctl: float) -> torch.Tensor:
    """PPO's per-action reward (DeepSpeed-Chat's): -kl_ctl * log(pi / pi_ref) at every action, plus the answer's
    (clipped) score at its last action. (rows, width), zero off the actions."""
    rewards = -kl_ctl * (log_probs - ref_log_probs) * mask
    last = (mask * torch.arange(mask.size(1), device=mask.device)).argmax(dim=1)
    rewards[torch.arange(mask.size(0)), last] += scores * mask.any(dim=1)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimates and returns over each row's actions, which are contiguous: the value after
    the last action is 0, and nothing flows across the answer's end. Both (rows, width), zero off the actions."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        following = mask[:, t + 1] if t + 1 < rewards.size(1) else torch.zeros_like(running)
        next_value = values[:, t + 1] * following if t + 1 < rewards.size(1) else following
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running * following
        advantages[:, t] = running * mask[:, t]
    return advantages, (advantages + values) * mask


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's critic loss, summed over actions: 0.5 * max((v - R)^2, (v_clipped - R)^2), with v_clipped the new value
    held within ±cliprange_value of the one it had when the rollout was scored; and the clipped share."""
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    per_token = 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2)
    share = (((values - old_values).abs() > cliprange_value).float() * mask).sum() / mask.sum().clamp(min=1)
    return (per_token * mask).sum(), share


def dpo_loss(chosen_log_ratio: torch.Tensor, rejected_log_ratio: torch.Tensor, beta: float, kind: str = "sigmoid",
             label_smoothing: float = 0.0) -> torch.Tensor:
    """Per pair, from each answer's summed log pi - log pi_ref: h = chosen's - rejected's; sigmoid (DPO):
    -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h), the loss of a label flipped with probability eps;
    ipo: (h - 1 / (2 beta))^2, which stops pushing once the margin reaches its target."""
    h = chosen_log_ratio - rejected_log_ratio
    if kind == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
