"""The GRPO family's maths (utils/objectives/group_losses.py): each rule against hand-computed values, the split of a
batch across processes, and parity with TRL 1.16.0's GRPOTrainer called on the same tensors."""
import math
import types
from collections import defaultdict
from unittest import mock

import pytest
import torch
import trl.trainer.grpo_trainer as trl_grpo  # requirements-dev.txt pins trl: the parity tests never skip

from utils.objectives.group_losses import aggregate_loss, clipped_token_loss, group_advantages, zero_variance_groups

REWARDS = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 3.0], dtype=torch.float64)  # K = 3: groups (1, 2, 3), (0, 0, 3)


def test_group_scale_divides_by_each_groups_unbiased_std():
    """Group (1, 2, 3): mean 2, std 1; group (0, 0, 3): mean 1, std sqrt(3) = 1.7320508; eps 1e-4.
    Planted: the batch's std (1.3784049) instead of the group's gives 0.72542 for the first group's 3;
    the biased std (n, not n - 1) gives 1.22459."""
    expected = [-1 / 1.0001, 0.0, 1 / 1.0001, -0.57731694, -0.57731694, 1.15463388]
    assert group_advantages(REWARDS, 3, "group").tolist() == pytest.approx(expected, abs=1e-7)


def test_batch_scale_keeps_the_group_mean_and_divides_by_the_batch_std():
    """The std of all six rewards is 1.3784049 (unbiased); the baseline is still each group's mean.
    Planted: the batch's mean 1.5 as the baseline gives -0.36271 for the first reward; batch_std ignored fails the
    second assert."""
    expected = [-0.72542362, 0.0, 0.72542362, -0.72542362, -0.72542362, 1.45084724]
    assert group_advantages(REWARDS, 3, "batch").tolist() == pytest.approx(expected, abs=1e-7)
    # the caller's all-reduced std replaces this process's
    expected = [-0.49997500, 0.0, 0.49997500, -0.49997500, -0.49997500, 0.99995000]
    assert group_advantages(REWARDS, 3, "batch", batch_std=2.0).tolist() == pytest.approx(expected, abs=1e-7)


def test_none_scale_is_the_centred_reward():
    """Dr. GRPO: no division. Planted: dividing by the group's std here gives -0.9999 for the first reward."""
    assert group_advantages(REWARDS, 3, "none").tolist() == [-1.0, 0.0, 1.0, -1.0, -1.0, 2.0]


def test_equal_rewards_are_a_zero_variance_group_with_advantages_zero():
    """Planted: no eps under the std gives NaN advantages for the tied groups; comparing with the batch's first
    reward instead of each group's misses the tied group (2, 2, 2)."""
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0])
    assert zero_variance_groups(rewards, 3).tolist() == [True, False, True]
    advantages = group_advantages(rewards, 3, "group")
    assert advantages[:3].tolist() == [0.0] * 3 and advantages[6:].tolist() == [0.0] * 3


def test_bad_scale_and_loss_type_and_missing_constant_are_refused():
    with pytest.raises(ValueError, match="scale must be one of group, batch, none"):
        group_advantages(REWARDS, 3, "std")
    with pytest.raises(ValueError, match="K >= 2"):
        group_advantages(REWARDS, 1, "group")
    per_token, mask = torch.ones(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="loss_type must be one of grpo, dapo, dr_grpo, bnpo"):
        aggregate_loss(per_token, mask, "ppo")
    with pytest.raises(ValueError, match="max_answer_len"):
        aggregate_loss(per_token, mask, "dr_grpo")


def _ratios_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two answers (A = +1, -1) over tokens with ratios 1.5, 0.5, 1.1, 1.25, 0.75; pi_old = 1."""
    ratios = torch.tensor([1.5, 0.5, 1.1, 1.25, 0.75], dtype=torch.float64)
    log_probs = ratios.log().repeat(2, 1).requires_grad_()
    return log_probs, torch.zeros(2, 5, dtype=torch.float64), torch.tensor([1.0, -1.0], dtype=torch.float64), \
        torch.ones(2, 5)


def test_surrogate_clips_asymmetrically_and_only_where_the_bound_binds():
    """eps_low 0.2, eps_high 0.28: the band is [0.8, 1.28]. A > 0: -min(rho, clip(rho)); A < 0: max(rho, clip(rho)).
    Planted: a symmetric clip (eps_high ignored) gives -1.2 for the ratio 1.25 with A > 0; eps_low and eps_high
    swapped gives 0.75, not 0.8, for the ratio 0.75 with A < 0; min and max swapped (no pessimism) gives -1.5 and 0.5
    and a gradient through the clipped tokens; a clip share counting every ratio out of the band, whatever A's sign,
    gives clip_high 0.2 and clip_low 0.4."""
    log_probs, old, advantages, mask = _ratios_case()
    per_token, stats = clipped_token_loss(log_probs, old, None, advantages, mask, 0.2, 0.28, 0.0)
    assert per_token.tolist() == [pytest.approx([-1.28, -0.5, -1.1, -1.25, -0.75]),
                                  pytest.approx([1.5, 0.8, 1.1, 1.25, 0.8])]
    per_token.sum().backward()
    # d/dlogp of -rho A is -rho A where the unclipped term is the min, 0 where the clipped (constant) one is
    assert log_probs.grad.tolist() == [pytest.approx([0.0, -0.5, -1.1, -1.25, -0.75]),
                                       pytest.approx([1.5, 0.0, 1.1, 1.25, 0.0])]
    assert stats == pytest.approx({"clip_low": 0.2, "clip_high": 0.1, "clip_region": 0.3})


def test_delta_caps_the_ratio_of_a_negative_advantage():
    """delta 1.4: the ratio 1.5 with A < 0 costs 1.4 instead of 1.5, with no gradient; nothing else moves.
    Planted: capping the clipped term instead of the unclipped one leaves 1.5."""
    log_probs, old, advantages, mask = _ratios_case()
    per_token, _ = clipped_token_loss(log_probs, old, None, advantages, mask, 0.2, 0.28, 0.0, delta=1.4)
    assert per_token.tolist() == [pytest.approx([-1.28, -0.5, -1.1, -1.25, -0.75]),
                                  pytest.approx([1.4, 0.8, 1.1, 1.25, 0.8])]
    per_token[1, 0].backward()
    assert log_probs.grad[1, 0].item() == 0.0


@pytest.mark.parametrize("kl_times_ratio", [False, True])
def test_k3_penalty_values_and_gradients(kl_times_ratio):
    """Ratios to the reference pi / pi_ref = 2, 0.5 and 3 (masked out), on-policy (rho = 1), A = 0, beta 0.5:
    k3 = pi_ref/pi - log(pi_ref/pi) - 1 = 0.5 + ln 2 - 1 = 0.19314718 and 2 - ln 2 - 1 = 0.30685282, mean 0.25.
    The gradient of beta k3 is beta (1 - pi_ref/pi) = 0.25, -0.5; weighted by rho, beta log(pi/pi_ref) = +-0.34657.
    Planted: the sign flipped (logp - ref) swaps the two values; the mean over the masked token too gives 0.3107;
    the weight rho detached gives the unweighted gradient."""
    log_probs = torch.tensor([[math.log(2), math.log(0.5), math.log(3)]], dtype=torch.float64, requires_grad=True)
    ref = torch.zeros(1, 3, dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    per_token, stats = clipped_token_loss(log_probs, log_probs.detach(), ref, torch.zeros(1, dtype=torch.float64),
                                          mask, 0.2, 0.28, 0.5, kl_times_ratio=kl_times_ratio)
    assert per_token.tolist() == [pytest.approx([0.09657359, 0.15342641, 0.0])]
    assert stats["kl_k3_token"] == pytest.approx(0.25)
    per_token.sum().backward()
    expected = [0.34657359, -0.34657359, 0.0] if kl_times_ratio else [0.25, -0.5, 0.0]
    assert log_probs.grad.tolist() == [pytest.approx(expected)]


def test_beta_without_a_reference_is_refused():
    log_probs, old, advantages, mask = _ratios_case()
    with pytest.raises(ValueError, match="beta != 0 needs the reference"):
        clipped_token_loss(log_probs, old, None, advantages, mask, 0.2, 0.28, 0.04)


# an answer of 1 token with loss 4 and one of 3 tokens with losses 1, 2, 3
PER_TOKEN = torch.tensor([[4.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
MASK = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize("loss_type, expected, planted", [
    ("grpo", 3.0, "the mean over all tokens in grpo mode (2.5) weighs the long answer's tokens as much as the short "
                  "one's"),
    ("dapo", 2.5, "the mean of the answers' means (3.0) weighs the one-token answer as much as the three-token one"),
    ("bnpo", 2.5, "dividing by the answers (5.0) instead of their tokens"),
    ("dr_grpo", 1.0, "dividing by the longest answer in the batch (10 / (2 x 3) = 1.667) instead of the constant 5"),
])
def test_aggregation_by_loss_type(loss_type, expected, planted):
    """grpo: (4 + 2) / 2; dapo and bnpo: 10 / 4; dr_grpo: 10 / (2 answers x max_answer_len 5)."""
    assert aggregate_loss(PER_TOKEN, MASK, loss_type, max_answer_len=5).item() == pytest.approx(expected), planted


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("split", [2, 1])
def test_two_processes_with_the_global_denominators_take_the_whole_batchs_step(loss_type, split):
    """Each process: its sum x 2 / the whole batch's denominator; DeepSpeed averages the two, which must give the
    one-process loss (and so the gradient, the losses being linear in the per-token terms), also when the processes
    hold 1 and 4 answers. Planted: grpo dividing its per-answer means by the local answer count fails the uneven
    split; dapo with the local token count fails both."""
    generator = torch.Generator().manual_seed(0)
    per_token = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    mask = (torch.arange(4) < torch.tensor([4, 1, 3, 2, 4])[:, None]).double()
    per_token = per_token * mask
    whole = aggregate_loss(per_token, mask, loss_type, max_answer_len=6)
    tokens, answers = mask.sum(), mask.size(0)
    halves = [aggregate_loss(per_token[rows], mask[rows], loss_type, max_answer_len=6, tokens=tokens,
                             answers=answers, world_size=2) for rows in (slice(0, split), slice(split, None))]
    assert (sum(halves) / 2).item() == pytest.approx(whole.item(), abs=1e-12)


# TRL's own code on our tensors: its trainer object without __init__, given the attributes its methods read, and its
# model's per-token log-probabilities replaced by the tensor under test.

class _OneProcess:
    """What the methods read of accelerate's Accelerator, for one process (or one of `num_processes`)."""
    device = torch.device("cpu")
    process_index = 0
    is_main_process = True

    def __init__(self, num_processes: int = 1):
        self.num_processes = num_processes

    def gather(self, tensor):
        return tensor

    def reduce(self, tensor, reduction="sum"):
        return tensor


def _trl(**attributes) -> trl_grpo.GRPOTrainer:
    trainer = object.__new__(trl_grpo.GRPOTrainer)
    trainer.accelerator = _OneProcess()
    trainer.model = types.SimpleNamespace(training=True, is_gradient_checkpointing=False)
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer.__dict__.update(attributes)
    return trainer


def _trl_advantages(rewards: torch.Tensor, k: int, scale: str) -> tuple[torch.Tensor, float]:
    """TRL's _generate_and_score_completions with generation and the reward functions replaced: the advantages it
    computes from `rewards`, and its share of groups with a zero std."""
    n = rewards.numel()
    trainer = _trl(
        environment_factories=None, tools=None, environments=[], num_generations=k, scale_rewards=scale,
        _generate=lambda prompts: ([[1]] * n, [[2, 3]] * n, None, ["answer"] * n, None, {}, None, [[]] * n),
        _calculate_rewards=lambda *_: rewards[:, None], reward_weights=torch.ones(1), reward_func_names=["r"],
        multi_objective_aggregation="sum_then_normalize", _tokenizer=types.SimpleNamespace(pad_token_id=0),
        pad_to_multiple_of=None, mask_truncated_completions=False, num_iterations=1, use_vllm=False, beta=0.0,
        args=types.SimpleNamespace(per_device_train_batch_size=n, steps_per_generation=1, gradient_accumulation_steps=1,
                                   gradient_checkpointing_kwargs=None),
        _logs={"prompt": [], "completion": [], "rewards": defaultdict(list), "advantages": [],
               "extra": defaultdict(list)}, _pending_extra_logs={}, _pending_metrics={}, log_multimodal=False)
    with mock.patch.object(trl_grpo, "gather_object", lambda obj: obj):  # one process, and no accelerate state left
        out = trainer._generate_and_score_completions([{"prompt": "p"}] * n)
    return out["advantages"], trainer._metrics["train"]["frac_reward_zero_std"][-1]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl(scale):
    """And the share of tied groups, which TRL logs as frac_reward_zero_std (from the batch's std under "batch", so
    not comparable there). Planted: eps 1e-8 instead of 1e-4 moves the first group's advantages by 2e-4."""
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, 2.0, 2.0, -1.0, 3.0, 0.25], dtype=torch.float64)
    theirs, zero_std_share = _trl_advantages(rewards, 3, scale)
    assert (group_advantages(rewards, 3, scale) - theirs).abs().max().item() < 1e-6
    if scale != "batch":
        assert zero_variance_groups(rewards, 3).double().mean().item() == pytest.approx(zero_std_share)


ROWS, WIDTH, MAX_ANSWER_LEN = 6, 5, 8  # the constant above the batch's width, as --max_answer_seq_len usually is
EPS_LOW, EPS_HIGH = 0.2, 0.28
# the answers' lengths: the fifth a truncated answer whose mask was zeroed, which still counts as an answer
LENGTHS = torch.tensor([5, 3, 1, 4, 0, 2])
CONFIGS = {"beta0": (0.0, False, None), "beta": (0.04, False, None), "beta-ratio-kl-delta": (0.04, True, 1.35)}


def _experience():
    """Per-token log-probs that moved away from the sampling policy's (rho != 1, as on a second pass over the same
    rollout) and from the reference's, TRL's advantages from rewards, and answers of unequal lengths."""
    generator = torch.Generator().manual_seed(8)  # a seed whose ratios reach both bounds and delta
    noise = lambda scale: torch.randn(ROWS, WIDTH, generator=generator, dtype=torch.float64) * scale  # noqa: E731
    log_probs = noise(0.5) - 1.5
    old, ref = log_probs + noise(0.3), log_probs + noise(0.3)
    advantages, _ = _trl_advantages(torch.tensor([0.0, 1.0, 0.5, -1.0, 3.0, 2.0], dtype=torch.float64), 3, "group")
    mask = (torch.arange(WIDTH) < LENGTHS[:, None]).long()
    return log_probs, old, ref, advantages, mask


def _trl_loss(log_probs: torch.Tensor, old: torch.Tensor, ref: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, loss_type: str, config: str, num_items: float | None = None,
              num_processes: int = 1) -> tuple[torch.Tensor, dict]:
    """TRL's _compute_loss on these tensors; `num_items`: dapo's token count of the whole batch."""
    beta, kl_times_ratio, delta = CONFIGS[config]
    trainer = _trl(
        loss_type=loss_type, beta=beta, epsilon_low=EPS_LOW, epsilon_high=EPS_HIGH,
        max_completion_length=MAX_ANSWER_LEN, importance_sampling_level="token", top_entropy_quantile=1.0,
        off_policy_mask_threshold=None, use_vllm=False, aux_loss_enabled=False, _entropy_bonus_enabled=False,
        current_gradient_accumulation_steps=1, accelerator=_OneProcess(num_processes),
        args=types.SimpleNamespace(delta=delta, use_bias_correction_kl=kl_times_ratio, steps_per_generation=1),
        _get_per_token_logps_and_entropies=lambda *_, **__: (log_probs, torch.zeros_like(log_probs), None))
    rows = log_probs.size(0)
    inputs = {"prompt_ids": torch.ones(rows, 2, dtype=torch.long), "prompt_mask": torch.ones(rows, 2, dtype=torch.long),
              "completion_ids": torch.ones_like(mask), "completion_mask": mask, "advantages": advantages,
              "old_per_token_logps": old, "num_items_in_batch": torch.tensor(num_items or mask.sum().item())}
    if beta:
        inputs["ref_per_token_logps"] = ref
    return trainer._compute_loss(None, inputs), trainer._metrics["train"]


def _ours(log_probs, old, ref, advantages, mask, loss_type, config, **denominators):
    beta, kl_times_ratio, delta = CONFIGS[config]
    per_token, stats = clipped_token_loss(log_probs, old, ref if beta else None, advantages, mask, EPS_LOW, EPS_HIGH,
                                          beta, delta=delta, kl_times_ratio=kl_times_ratio)
    return aggregate_loss(per_token, mask, loss_type, max_answer_len=MAX_ANSWER_LEN, **denominators), per_token, stats


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "bnpo"])
def test_loss_gradient_and_clip_shares_match_trl(loss_type, config):
    """The loss, its gradient with respect to every log-prob, and the logged clip shares and KL, against TRL on
    the same tensors. Planted: any aggregation bug above; the KL weighted by rho without its gradient."""
    log_probs, old, ref, advantages, mask = _experience()
    mine, theirs = log_probs.clone().requires_grad_(), log_probs.clone().requires_grad_()
    loss, _, stats = _ours(mine, old, ref, advantages, mask, loss_type, config)
    trl_loss, metrics = _trl_loss(theirs, old, ref, advantages, mask, loss_type, config)
    assert abs(loss.item() - trl_loss.item()) < 1e-6
    loss.backward()
    trl_loss.backward()
    assert (mine.grad - theirs.grad).abs().max().item() < 1e-6
    assert stats["clip_low"] > 0 and stats["clip_high"] > 0  # the inputs reach both bounds, and delta:
    delta = CONFIGS["beta-ratio-kl-delta"][2]
    assert (((log_probs - old).exp() > delta) & (advantages[:, None] < 0) & (mask > 0)).any()
    keys = {"clip_low": "clip_ratio/low_mean", "clip_high": "clip_ratio/high_mean",
            "clip_region": "clip_ratio/region_mean"} | ({"kl_k3_token": "kl"} if CONFIGS[config][0] else {})
    for ours_key, trl_key in keys.items():
        assert stats[ours_key] == pytest.approx(metrics[trl_key][-1], abs=1e-9), ours_key


@pytest.mark.parametrize("config", CONFIGS)
def test_per_token_losses_match_trl(config):
    """Each answer token's loss alone: TRL's dapo loss with that one token in the mask and a count of 1."""
    log_probs, old, ref, advantages, mask = _experience()
    _, per_token, _ = _ours(log_probs, old, ref, advantages, mask, "dapo", config)
    for row, column in mask.nonzero().tolist():
        one = torch.zeros_like(mask)
        one[row, column] = 1
        trl_loss, _ = _trl_loss(log_probs, old, ref, advantages, one, "dapo", config, num_items=1)
        assert abs(per_token[row, column].item() - trl_loss.item()) < 1e-6, (row, column)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "bnpo"])
def test_each_of_two_processes_matches_trls_loss_on_that_process(loss_type):
    """Three answers per process: with the whole batch's denominators and world size 2, each process's loss is the
    one TRL computes on that process (dapo from the token count of both processes, the others from its own rows)."""
    log_probs, old, ref, advantages, mask = _experience()
    for rows in (slice(0, 3), slice(3, 6)):
        part = [t[rows] for t in (log_probs, old, ref, advantages, mask)]
        loss, _, _ = _ours(*part, loss_type, "beta", tokens=mask.sum(), answers=ROWS, world_size=2)
        trl_loss, _ = _trl_loss(*part, loss_type, "beta", num_items=mask.sum().item(), num_processes=2)
        assert abs(loss.item() - trl_loss.item()) < 1e-6
