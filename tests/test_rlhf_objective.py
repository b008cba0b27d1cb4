"""Step 3's maths and rollout, in process: the RLOO advantage, RAFT's choice, the KL estimators, the clipped loss and
PPO's rewards, advantages and value loss against hand-computed values; log-probabilities recomputed by the training
forward against generate's own; and the state at initialisation (KL 0, ratio 1, no gradient from a constant
reward)."""
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from utils.data.formatting import format_text
from utils.data.synthetic import generate_pairs
from utils.flags import step_parser
from utils.models.loading import load_causal_lm, load_reward_model, load_tokenizer
from utils.models.lora import WithoutAdapters, add_lora
from utils.models.reward_model import RewardModel
from utils.objectives.losses import clipped_policy_loss, clipped_value_loss, gae, kl_k1, kl_k3, token_rewards
from utils.objectives.algorithms import objective_class
from utils.objectives.answer_rewards import AnswerRewards
from utils.objectives.policy import distinct_2, normalized, raft_choice, rloo_advantages
from utils.objectives.ppo import critic_values
from utils.objectives.rollout import (
    actions,
    encode_prompts,
    sample,
    sampling_config,
    shared_scores,
    token_log_probs,
)


def test_rloo_advantage_is_each_reward_minus_the_others_mean():
    """The baseline leaves the answer's own reward out (planted: the mean of all K rewards, its own included, and
    every advantage shrinks by (K-1)/K)."""
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0], dtype=torch.float64)
    advantages = rloo_advantages(rewards, k=4)
    expected = torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0, 0, 0, 0, 0], dtype=torch.float64)
    assert torch.allclose(advantages, expected) and advantages[:4].sum().abs() < 1e-12


def test_raft_keeps_the_first_best_and_never_a_truncated_answer():
    rewards = torch.tensor([1.0, 3.0, 3.0, 0.0, 9.0, 2.0, 7.0, 7.0])
    truncated = torch.tensor([False, False, False, False, True, False, True, True])
    assert raft_choice(rewards, truncated, 4, "per_prompt").nonzero().flatten().tolist() == [1, 5]
    assert not raft_choice(rewards, torch.ones(8, dtype=torch.bool), 4, "per_prompt").any()
    # LMFlow's variant: the best 1/K of all answers, wherever their prompts
    assert raft_choice(rewards, truncated, 4, "global").nonzero().flatten().tolist() == [1, 2]


def test_kl_estimators_and_the_clipped_loss_by_hand():
    log_probs = torch.log(torch.tensor([[0.5, 0.25, 0.9]]))
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.1]]))
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the last position is not an action
    assert kl_k1(log_probs, ref, mask).item() == pytest.approx(0.0)  # log 2 + log 1/2
    assert kl_k3(log_probs, ref, mask).item() == pytest.approx((0.5 - 1 + torch.log(torch.tensor(2.0)).item())
                                                               + (2 - 1 - torch.log(torch.tensor(2.0)).item()))
    assert kl_k3(ref, ref, mask).item() == 0 and kl_k1(ref, ref, mask).item() == 0
    new = torch.log(torch.tensor([[0.6, 0.2, 0.9]]))  # ratios 1.2 and 0.8
    loss, clipped, _ = clipped_policy_loss(new, log_probs, torch.tensor([2.0]), mask, cliprange=0.1)
    assert loss.item() == pytest.approx(-(1.1 * 2 + 0.8 * 2))  # min(rho A, clip(rho) A) with A > 0
    assert clipped.item() == 1.0
    loss, _, _ = clipped_policy_loss(new, log_probs, torch.tensor([-1.0]), mask, cliprange=0.1)
    assert loss.item() == pytest.approx(1.2 + 0.9)  # A < 0: the larger ratio is kept, the smaller one clipped


def test_ppo_rewards_advantages_and_value_loss_by_hand():
    """The pad after the answer has a value, and none of it flows into the answer's advantages (planted: drop
    `* following` from next_value, or from running, in gae)."""
    mask = torch.tensor([[0.0, 1, 1, 1, 0]])  # the last prompt position, three actions, a pad
    log_probs, ref = torch.tensor([[0.0, -1, -2, -1, 0]]), torch.tensor([[0.0, -1.5, -2, -0.5, 0]])
    rewards = token_rewards(torch.tensor([2.0]), log_probs, ref, mask, kl_ctl=0.1)
    assert rewards[0].tolist() == pytest.approx([0, -0.05, 0, 2.05, 0])  # -0.1 * log-ratio; the score at the end
    values = torch.tensor([[0.0, 0.5, 1.0, 1.5, 9.0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # from the end: 2.05 - 1.5; then (0 + 1.5 - 1.0) + 0.95 * 0.55; then (-0.05 + 1.0 - 0.5) + 0.95 * 1.0225
    assert advantages[0].tolist() == pytest.approx([0, 1.421375, 1.0225, 0.55, 0])
    assert returns[0].tolist() == pytest.approx([0, 1.921375, 2.0225, 2.05, 0])
    # lam 0: each advantage is its own TD error, r_t + 0.5 * V_{t+1} - V_t
    assert gae(rewards, values, mask, gamma=0.5, lam=0.0)[0][0].tolist() == pytest.approx([0, -0.05, -0.25, 0.55, 0])
    new, old, target = (torch.tensor([[0.0, 1, 2, 3, 9]]), torch.tensor([[0.0, 1.5, 1.5, 1.5, 0]]),
                        torch.tensor([[0.0, 2, 2, 2, 0]]))
    loss, clipped = clipped_value_loss(new, old, target, mask, cliprange_value=0.2)
    # clipped values 1.3, 1.7, 1.7: per token 0.5 * max(1, 0.49), 0.5 * max(0, 0.09), 0.5 * max(1, 0.09)
    assert loss.item() == pytest.approx(0.5 + 0.045 + 0.5) and clipped.item() == 1.0


def test_normalization_and_distinct_2():
    scores = torch.tensor([1.0, 3.0])
    assert normalized(scores, "z", {"mean": 2.0, "std": 0.5}).tolist() == [-2.0, 2.0]
    assert normalized(scores, "minmax", {"min": 1.0, "max": 3.0}).tolist() == [-1.0, 1.0]
    assert distinct_2(["a b c", "a b d"]) == 3 / 4 and distinct_2(["x", ""]) == 0.0


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_training_forward_recomputes_generates_log_probs(family, opt_dir, llama_dir):
    model_dir = str(opt_dir if family == "opt" else llama_dir)
    tokenizer = load_tokenizer(model_dir, "end", append_eos=False)
    model = load_causal_lm(model_dir, tokenizer, 0.0, False).eval()
    prompts = [" Human: What is 3 plus 4? Assistant:", " Human: Hi? Assistant:"]  # unequal: left padding
    ids, mask, _ = encode_prompts(prompts, tokenizer, 64)
    config = sampling_config(tokenizer, 12, temperature=0.7)
    rollout = sample(model, tokenizer, ids, mask, 3, config, seed=5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        out = model.generate(input_ids=ids.repeat_interleave(3, 0), attention_mask=mask.repeat_interleave(3, 0),
                             generation_config=config, output_logits=True, return_dict_in_generate=True)
    assert torch.equal(out.sequences[:, ids.size(1):][rollout.answer_mask[:, ids.size(1):].bool()],
                       rollout.input_ids[:, ids.size(1):][rollout.answer_mask[:, ids.size(1):].bool()])
    generated = torch.stack(out.logits, dim=1).float() / 0.7  # (rows, steps, vocab)
    from_generate = torch.log_softmax(generated, -1).gather(2, out.sequences[:, ids.size(1):, None]).squeeze(2)
    with torch.no_grad():
        recomputed, _ = token_log_probs(model, rollout, 0.7)
    answer = actions(rollout)[:, ids.size(1) - 1:].bool()
    assert answer.any(dim=1).all()
    assert torch.allclose(recomputed[:, ids.size(1) - 1:][answer], from_generate[answer], atol=1e-5)
    eos = tokenizer.eos_token_id
    for row, length in zip(rollout.input_ids[:, ids.size(1):], rollout.lengths):  # cut after the first EOS
        assert (row[:length - 1] != eos).all() and (row[length:] == tokenizer.pad_token_id).all()


def _objective(model_dir, tokenizer, reward_dir, algo="rloo", **extra):
    args = step_parser(3).parse_args(["--actor_model_name_or_path", str(model_dir), "--critic_model_name_or_path",
                                     str(reward_dir), "--output_dir", "unused", "--algo", algo, "--max_answer_seq_len",
                                     "10", "--max_prompt_seq_len", "32"])
    reference = load_causal_lm(str(model_dir), tokenizer, 0.0, False).eval()
    reward = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    prompts = [{"prompt": r["prompt"]} for r in generate_pairs(4, seed=2)]
    rewards = AnswerRewards(args, tokenizer, reward, load_tokenizer(str(reward_dir), "end", append_eos=True))
    return objective_class(algo)(args=args, prompts=prompts, tokenizer=tokenizer, reference=reference,
                                 rewards=rewards, normalization=None, **extra)


def test_at_initialisation_kl_is_zero_ratio_one_and_a_constant_reward_moves_nothing(opt_dir, tmp_path):
    """Exactly, not to a tolerance (planted: compute the reference's log-probs one row per answer while the actor's
    share a row per prompt, and the KL is 6e-8)."""
    tokenizer = load_tokenizer(str(opt_dir), "end", append_eos=False)
    reward_dir = tmp_path / "constant_rm"
    reward = AutoModelForSequenceClassification.from_pretrained(opt_dir, num_labels=1)
    torch.nn.init.zeros_(reward.score.weight)  # every text scores 0
    reward.config.pad_token_id = tokenizer.pad_token_id
    reward.save_pretrained(reward_dir)
    tokenizer.save_pretrained(reward_dir)
    objective = _objective(opt_dir, tokenizer, reward_dir)
    actor = load_causal_lm(str(opt_dir), tokenizer, 0.0, False).train()
    loss, stats = objective(actor, {"prompt_index": torch.tensor([0, 1, 2, 3])})
    assert stats["kl"] == 0.0 and stats["kl_k3"] == 0.0 and stats["ratio_max"] == 1.0
    assert stats["clip_fraction"] == 0.0 and stats["reward_std"] == 0.0
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in actor.parameters())

    # PPO, from the same start: the experience's log-probs are the actor's own, so the first ratio is exactly 1
    critic = RewardModel(AutoModelForSequenceClassification.from_pretrained(reward_dir))
    ppo = _objective(opt_dir, tokenizer, reward_dir, "ppo", critic=critic)
    rollout, rollout_stats = ppo._rollout(actor, ppo.prompts, 4, seed=3)
    experience = ppo.experience(actor, rollout, rollout_stats.pop("_scores"), rollout_stats)
    assert experience.stats["kl"] == 0.0 and experience.stats["kl_k3"] == 0.0 and experience.stats["reward"] == 0.0
    assert not experience.advantages.any()  # no reward, no KL, and a critic that values everything at 0
    _, stats = ppo.actor_loss(actor, experience)
    assert stats["ratio_max"] == 1.0 and stats["clip_fraction"] == 0.0


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_each_prompt_is_computed_once_for_its_k_samples_and_answers_do_not_change(family, opt_dir, llama_dir):
    """The prompts' keys and values come from one pass over B prompts, then the K samples continue from them: greedy
    and seeded sampled answers are those of the plain path, which computes every prompt K times (planted: ignore
    prefill_once, and the first forward sees B*K full prompts)."""
    model_dir = str(opt_dir if family == "opt" else llama_dir)
    tokenizer = load_tokenizer(model_dir, "end", append_eos=False)
    model = load_causal_lm(model_dir, tokenizer, 0.0, False).eval()
    ids, mask, _ = encode_prompts([r["prompt"] for r in generate_pairs(3, seed=4)], tokenizer, 64)
    shapes = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
                                           with_kwargs=True)
    for greedy in (True, False):
        config = sampling_config(tokenizer, 10, 1.0, greedy)
        plain = sample(model, tokenizer, ids, mask, 4, config, seed=5, prefill_once=False)
        shapes.clear()
        once = sample(model, tokenizer, ids, mask, 4, config, seed=5)
        assert shapes[:2] == [(3, ids.size(1) - 1), (12, 1)]
        assert torch.equal(once.input_ids, plain.input_ids) and once.answers == plain.answers
    hook.remove()


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_one_row_per_prompt_gives_the_per_sample_log_probs_and_gradients(family, opt_dir, llama_dir):
    """[prompt, answer_1, ..., answer_K] in one row, with each answer seeing the prompt and itself: log-probs,
    entropies, the critic's values and the gradients of losses on them equal the K-row computation to 1e-5, with answers of unequal
    lengths and left-padded prompts of unequal lengths (planted: let answer 2 see answer 1, and they differ)."""
    model_dir = str(opt_dir if family == "opt" else llama_dir)
    tokenizer = load_tokenizer(model_dir, "end", append_eos=False)
    model = load_causal_lm(model_dir, tokenizer, 0.0, False).eval()
    ids, mask, _ = encode_prompts([" Human: What is 3 plus 4? Assistant:", " Human: Hi? Assistant:"], tokenizer, 64)
    rollout = sample(model, tokenizer, ids, mask, 4, sampling_config(tokenizer, 12, 1.0), seed=2)
    for row, length in enumerate([12, 3, 7, 1, 5, 12, 2, 9]):  # as if these answers had ended with the EOS
        end = rollout.prompt_width + length
        rollout.input_ids[row, end - 1], rollout.input_ids[row, end:] = tokenizer.eos_token_id, tokenizer.pad_token_id
        rollout.attention_mask[row, end:] = rollout.answer_mask[row, end:] = 0
    answer = actions(rollout)
    results = []
    for k in (1, 4):
        model.zero_grad()
        taken, entropy = token_log_probs(model, rollout, 0.7, k)
        ((taken * answer).sum() + (entropy * answer).sum()).backward()
        results.append((taken * answer, entropy * answer, [p.grad.clone() for p in model.parameters()]))
    (taken, entropy, grads), (shared_taken, shared_entropy, shared_grads) = results
    assert torch.allclose(shared_taken, taken, atol=1e-5) and torch.allclose(shared_entropy, entropy, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(shared_grads, grads))
    critic = RewardModel(load_reward_model(model_dir, tokenizer, 0.0, False))  # PPO's critic
    values = []
    for k in (1, 4):
        critic.zero_grad()
        value = critic_values(critic, rollout, k) * answer
        value.pow(2).sum().backward()
        values.append((value, [p.grad.clone() for p in critic.parameters()]))
    (value, grads), (shared_value, shared_grads) = values
    assert torch.allclose(shared_value, value, atol=1e-5) and value.abs().sum() > 0
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(shared_grads, grads))


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_a_prompts_k_answers_scored_in_one_row_score_as_pipeline_does(family, opt_dir, llama_dir, tmp_path):
    """The reward model reads each answer's score at its own last token of the shared row: equal to pipeline() on
    each text to 1e-5, with an empty answer and answers of unequal lengths (planted: read one token early)."""
    tokenizer = AutoTokenizer.from_pretrained(opt_dir if family == "opt" else llama_dir)
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    model = AutoModelForSequenceClassification.from_pretrained(opt_dir if family == "opt" else llama_dir,
                                                               num_labels=1)
    model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp_path), tokenizer.save_pretrained(tmp_path)
    prompts = [r["prompt"] for r in generate_pairs(2, seed=6)]
    answers = ["Sure, here it is.", "", "No.", "Let me think about that for a moment, then answer.",
               "Yes", "Fine, thanks for asking.", "It depends.", "I would rather not say anything about it."]
    texts = [format_text(prompts[i // 4], answer, "dschat", tokenizer) for i, answer in enumerate(answers)]
    shared = shared_scores(model.eval(), tokenizer, texts, 4, batch_size=4)
    scorer = pipeline("text-classification", model=str(tmp_path), function_to_apply="none")
    assert torch.allclose(shared, torch.tensor([out["score"] for out in scorer(texts)]), atol=1e-5)


def test_ppo_records_its_experience_with_dropout_off(opt_dir, reward_dir):
    """Old log-probs and values come from the models as they sampled, without dropout, whatever the dropout the
    updates train with; both models return to training mode (planted: drop dropout_off and they differ)."""
    tokenizer = load_tokenizer(str(opt_dir), "end", append_eos=False)
    actor = load_causal_lm(str(opt_dir), tokenizer, 0.5, False).train()
    critic = RewardModel(AutoModelForSequenceClassification.from_pretrained(reward_dir, dropout=0.5)).train()
    ppo = _objective(opt_dir, tokenizer, reward_dir, "ppo", critic=critic)
    rollout, rollout_stats = ppo._rollout(actor, ppo.prompts, 2, seed=3)
    experience = ppo.experience(actor, rollout, rollout_stats.pop("_scores"), rollout_stats)
    assert actor.training and critic.training
    actor.eval(), critic.eval()
    with torch.no_grad():
        assert torch.equal(experience.old_log_probs, token_log_probs(actor, rollout, ppo.temperature, ppo.row_k)[0])
        assert torch.equal(experience.old_values, critic_values(critic, rollout, ppo.row_k) * actions(rollout))


def test_the_actor_without_its_adapters_is_the_reference(opt_dir):
    """With --only_optimize_lora the reference is no copy: the actor's frozen weights, its adapters switched off."""
    tokenizer = load_tokenizer(str(opt_dir), "end", append_eos=False)
    args = step_parser(3).parse_args(["--actor_model_name_or_path", str(opt_dir), "--critic_model_name_or_path", "rm",
                                      "--output_dir", "unused", "--actor_lora_dim", "4", "--only_optimize_lora"])
    actor = add_lora(load_causal_lm(str(opt_dir), tokenizer, 0.0, False), args).eval()
    with torch.no_grad():  # trained adapters: LoRA starts with B = 0, which would change nothing
        for name, param in actor.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    reference = load_causal_lm(str(opt_dir), tokenizer, 0.0, False).eval()
    ids, mask, _ = encode_prompts([" Human: What is 3 plus 4? Assistant:", " Human: Hi? Assistant:"], tokenizer, 64)
    rollout = sample(reference, tokenizer, ids, mask, 2, sampling_config(tokenizer, 8, 1.0), seed=1)
    actions_mask = actions(rollout).bool()
    with torch.no_grad():
        base, on = (token_log_probs(m, rollout, 1.0)[0][actions_mask] for m in (reference, actor))
    off = token_log_probs(WithoutAdapters(actor), rollout, 1.0)[0][actions_mask]
    assert torch.allclose(off, base, atol=1e-6) and not torch.allclose(on, base, atol=1e-2)
    with torch.no_grad():  # switched back on, and still trainable
        assert torch.equal(token_log_probs(actor, rollout, 1.0)[0][actions_mask], on)
    assert all(p.requires_grad for name, p in actor.named_parameters() if "lora_" in name)
