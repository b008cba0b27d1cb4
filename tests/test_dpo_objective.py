"""DPO's maths and layout, in process: the DPO and IPO losses against hand-computed values; log 2 and zero implicit
rewards at initialisation; the shared-prompt row giving each answer's log-probability, the loss and the gradients
of two sequences; DPO's pairs encoded with their answers' starts; online DPO's choice of the best and the worst."""
import math

import pytest
import torch

from utils.data.encoding import encode_preferences
from utils.data.synthetic import generate_pairs
from utils.errors import UserError
from utils.flags import step_parser
from utils.models.loading import load_causal_lm, load_tokenizer
from utils.objectives import dpo
from utils.objectives.dpo import DPOObjective, answer_log_probs, collate_preferences
from utils.objectives.dpo_reference import precompute_reference
from utils.objectives.losses import dpo_loss
from utils.objectives.online_dpo import best_and_worst
from utils.objectives.policy_checks import check_flags


def test_dpo_ipo_and_label_smoothing_by_hand():
    """Unequal margins on both sides tell the sign and the order of the log-ratios (planted: h computed as
    rejected's minus chosen's, and the first loss is 0.85436 instead of 0.55436)."""
    chosen, rejected = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-1.0, 1.0, 0.5])  # h = 3, -2, 0
    expected = [-math.log(1 / (1 + math.exp(-0.1 * h))) for h in (3, -2, 0)]
    assert dpo_loss(chosen, rejected, 0.1).tolist() == pytest.approx(expected, abs=1e-6)
    assert dpo_loss(chosen, rejected, 0.1)[0].item() == pytest.approx(0.554355, abs=1e-6)
    smoothed = [0.8 * e + 0.2 * -math.log(1 / (1 + math.exp(0.1 * h))) for e, h in zip(expected, (3, -2, 0))]
    assert dpo_loss(chosen, rejected, 0.1, label_smoothing=0.2).tolist() == pytest.approx(smoothed, abs=1e-6)
    assert dpo_loss(chosen, rejected, 0.5, "ipo").tolist() == pytest.approx([(3 - 1) ** 2, (-2 - 1) ** 2, 1.0])


def _pairs(tokenizer):
    rows = generate_pairs(6, seed=1)
    rows[0]["prompt"] = rows[0]["prompt"] * 3  # a long prompt
    rows[1]["rejected"] = rows[1]["chosen"] + " And more."  # the answers share their first tokens
    return encode_preferences(rows, tokenizer, "dschat", 512, "truncate")[0]


def test_pairs_mark_where_each_answer_starts_and_end_with_the_eos(opt_dir):
    """Only the answer's tokens count in its log-probability; a cut prompt moves the starts with it (planted: the
    starts kept as before the cut)."""
    tokenizer = load_tokenizer(str(opt_dir), "end", append_eos=False)
    rows = generate_pairs(2, seed=3)
    whole = encode_preferences(rows, tokenizer, "dschat", 512, "truncate")[0]
    for pair, row in zip(whole, rows):
        for side, name in enumerate(("chosen", "rejected")):
            ids = pair[name]
            assert ids[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in ids[pair["starts"][side]:-1]
            assert tokenizer.decode(ids[pair["starts"][side]:-1]).strip() == row[name].strip()
    cut = encode_preferences(rows, tokenizer, "dschat", len(whole[0]["chosen"]) - 3, "truncate")[0][0]
    assert tokenizer.decode(cut["chosen"][cut["starts"][0]:-1]).strip() == rows[0]["chosen"].strip()


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_one_row_per_pair_gives_the_log_probs_loss_and_gradients_of_two_sequences(family, opt_dir, llama_dir,
                                                                                    monkeypatch):
    """Against each answer's log-probability computed in its own sequence alone, and the two-sequence layout's loss
    and gradients, to 1e-5, whether the output layer sees only the answer positions or every one (planted: the
    rejected answer's tokens predicted from the chosen row's positions, and the log-probs differ by nats; or the
    kept positions' index off by one)."""
    model_dir = str(opt_dir if family == "opt" else llama_dir)
    tokenizer = load_tokenizer(model_dir, "end", append_eos=False)
    pairs = _pairs(tokenizer)
    torch.manual_seed(0)
    model = load_causal_lm(model_dir, tokenizer, 0.0, False)
    alone = []
    with torch.no_grad():
        for side, name in enumerate(("chosen", "rejected")):
            for pair in pairs:
                ids = pair[name]
                log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
                alone.append(sum(log_probs[j - 1, ids[j]] for j in range(pair["starts"][side], len(ids))))
    reference = {"ref": None}
    results = []
    for shared in (False, True):
        batch = collate_preferences(pairs, tokenizer.pad_token_id, shared)
        if reference["ref"] is None:
            reference["ref"] = answer_log_probs(model, batch).detach() - 1.0  # a reference the policy differs from
        batch["ref_log_probs"] = reference["ref"]
        model.zero_grad()
        loss, _ = DPOObjective(beta=0.5)(model, batch)
        loss.backward()
        results.append((answer_log_probs(model, batch).detach(), loss.item(),
                        {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain, plain_loss, plain_grads), (shared, shared_loss, shared_grads) = results
    assert torch.allclose(shared, torch.stack(alone), atol=1e-5) and torch.allclose(plain, shared, atol=1e-5)
    assert shared_loss == pytest.approx(plain_loss, abs=1e-5)
    for name, grad in plain_grads.items():
        assert torch.allclose(shared_grads[name], grad, atol=1e-5), name
    rows = collate_preferences(pairs, tokenizer.pad_token_id, True)
    monkeypatch.setattr(dpo, "keeps_logits", lambda model: False)  # a model without logits_to_keep
    with torch.no_grad():
        assert torch.allclose(answer_log_probs(model, rows), shared, atol=1e-5)
    assert rows["num_tokens"] < 0.9 * sum(len(p["chosen"]) + len(p["rejected"]) for p in pairs)


def test_at_initialisation_the_loss_is_log_2_and_the_implicit_rewards_0(opt_dir):
    """Exactly, with the reference a second copy, or precomputed (planted: the precomputed log-probs stored as
    [rejected, chosen], and the loss moves off log 2)."""
    tokenizer = load_tokenizer(str(opt_dir), "end", append_eos=False)
    pairs = _pairs(tokenizer)
    policy = load_causal_lm(str(opt_dir), tokenizer, 0.0, False).train()
    reference = load_causal_lm(str(opt_dir), tokenizer, 0.0, False).eval()
    batch = collate_preferences(pairs, tokenizer.pad_token_id)
    loss, stats = DPOObjective(beta=0.1, reference=reference)(policy, batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert stats["rewards_chosen"] == 0.0 and stats["rewards_rejected"] == 0.0 and stats["margin"] == 0.0
    values = precompute_reference(reference, pairs, tokenizer.pad_token_id, True, batch_size=4)
    ready = collate_preferences([p | {"ref": v} for p, v in zip(pairs, values)], tokenizer.pad_token_id)
    loss, stats = DPOObjective(beta=0.1)(policy, ready)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7) and stats["margin"] == 0.0


def test_online_dpo_pairs_the_best_and_the_worst_and_skips_ties():
    """Per prompt (K = 3): the argmax and argmin rows, the first of equal ones, and no pair when they tie within the
    threshold (planted: `>=` for `>`, and a prompt of equal rewards becomes a pair of equal quality)."""
    scores = torch.tensor([1.0, 3.0, 2.0,   5.0, 5.0, 4.0,   7.0, 7.0, 7.0,   0.0, 0.05, 0.1])
    best, worst, keep = best_and_worst(scores, 3, threshold=0.0)
    assert best.tolist() == [1, 3, 6, 11] and worst.tolist() == [0, 5, 6, 9]
    assert keep.tolist() == [True, True, False, True]
    assert best_and_worst(scores, 3, threshold=0.1)[2].tolist() == [True, True, False, False]


@pytest.mark.parametrize("extra, message", [
    (["--algo", "online_dpo", "--num_generations", 1], "needs K >= 2"),
    (["--algo", "dpo", "--beta", 0], "--beta 0"),
    (["--algo", "online_dpo", "--beta", -0.1], "--beta -0.1"),
    (["--algo", "dpo", "--dpo_loss", "ipo", "--label_smoothing", 0.1], "IPO has none"),
    (["--algo", "dpo", "--label_smoothing", 0.5], "--label_smoothing 0.5"),
    (["--algo", "online_dpo", "--precompute_ref_log_probs"], "use it with --algo dpo"),
    (["--algo", "dpo", "--prompt_data_path", "synthetic:10"], "trains on the preference pairs"),
])
def test_dpo_flag_mistakes_are_refused(opt_dir, extra, message):
    args = step_parser(3).parse_args(["--actor_model_name_or_path", str(opt_dir), "--critic_model_name_or_path",
                                      str(opt_dir), "--output_dir", "unused", *map(str, extra)])
    with pytest.raises(UserError, match=message):
        check_flags(args)


def test_a_reward_is_needed_except_for_offline_dpo_and_ppo_needs_a_reward_model(opt_dir):
    def args(*extra):
        return step_parser(3).parse_args(["--actor_model_name_or_path", str(opt_dir), "--output_dir", "unused",
                                          *extra])
    for algo in ("rloo", "online_dpo"):
        with pytest.raises(UserError, match=f"--algo {algo} scores sampled answers: pass a reward model"):
            check_flags(args("--algo", algo))
        check_flags(args("--algo", algo, "--reward_funcs", "flaw"))  # a reward function is a reward
    with pytest.raises(UserError, match="--algo ppo trains its critic from the reward model"):
        check_flags(args("--algo", "ppo", "--reward_funcs", "flaw"))
    check_flags(args("--algo", "dpo"))
