"""Score a saved model the ways its users do, under whichever transformers is importable (4.x or 5.x).

    python tests/score_like_users.py JOBS_JSON

JOBS_JSON is a list of jobs, each a "model_dir" with "texts" (already formatted, for plain-template reward models),
"conversations" (message lists, for chat-template reward models) or "prompts" (for a causal LM: greedy
continuations). The last line printed is a JSON list: per job, the transformers version and per idiom a list of
results in the order of its cases. Nothing here imports the project, so that it runs beside an older transformers.
"""
from __future__ import annotations

import json
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

V5 = int(transformers.__version__.split(".")[0]) >= 5


def score_texts(model_dir: str, texts: list[str]) -> dict[str, list]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    plain = pipeline("text-classification", model=model_dir, function_to_apply="none", device="cpu")
    # LMFlow's model card: sentiment-analysis, every label's score (top_k=None; 5.x dropped return_all_scores)
    card = pipeline("sentiment-analysis", model=model_dir, device="cpu")
    with torch.no_grad():
        bare = [model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item() for text in texts]
    return {"ids": [tokenizer(text)["input_ids"] for text in texts],
            "pipeline": [out["score"] for out in plain(texts, batch_size=1)],
            "lmflow_card": [out[0]["score"] for out in card(texts, top_k=None, function_to_apply="none",
                                                             batch_size=1)],
            "model": bare}


def score_conversations(model_dir: str, conversations: list[list[dict[str, str]]]) -> dict[str, list]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    # RLHFlow's model card: the template's text without its leading BOS text (the tokenizer adds the BOS), then the
    # pipeline
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    if tokenizer.bos_token:
        texts = [text.removeprefix(tokenizer.bos_token) for text in texts]
    card = pipeline("sentiment-analysis", model=model_dir, tokenizer=tokenizer, device="cpu")
    with torch.no_grad():
        if V5:  # TRL and RewardBench: the template's ids, then the model
            ids = [tokenizer.apply_chat_template(c, return_dict=True, return_tensors="pt") for c in conversations]
            by_ids = [model(**enc).logits[0, 0].item() for enc in ids]
        else:  # RewardBench's own form under 4.x, where the ids come back as a tensor
            ids = [tokenizer.apply_chat_template(c, tokenize=True, return_tensors="pt") for c in conversations]
            by_ids = [model(enc).logits[0, 0].item() for enc in ids]
    return {"chat_ids": [enc["input_ids"][0].tolist() if V5 else enc[0].tolist() for enc in ids],
            "rlhflow_card": [out[0]["score"] for out in card(texts, top_k=None, function_to_apply="none",
                                                              batch_size=1)],
            "chat_ids_model": by_ids}


def generate(model_dir: str, prompts: list[str]) -> dict[str, list]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    lm = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    # 4.x cuts the prompt's text off the decoded whole, 5.x decodes the new tokens alone: a leading space may differ
    outs = lm(prompts, max_new_tokens=12, do_sample=False, return_full_text=False)
    with torch.no_grad():
        encoded = [tokenizer(p, return_tensors="pt") for p in prompts]
        logits = [model(**enc).logits[0, -1, :5].tolist() for enc in encoded]
        greedy = [model.generate(**enc, max_new_tokens=12, do_sample=False)[0].tolist() for enc in encoded]
    return {"generated": [out[0]["generated_text"].strip() for out in outs], "generated_ids": greedy,
            "last_logits": logits, "ids": [enc["input_ids"][0].tolist() for enc in encoded]}


def run(job: dict) -> dict[str, object]:
    result: dict[str, object] = {"version": transformers.__version__}
    if job.get("texts"):
        result |= score_texts(job["model_dir"], job["texts"])
    if job.get("conversations"):
        result |= score_conversations(job["model_dir"], job["conversations"])
    if job.get("prompts"):
        result |= generate(job["model_dir"], job["prompts"])
    return result


def main() -> None:
    with open(sys.argv[1]) as handle:
        jobs = json.load(handle)
    print(json.dumps([run(job) for job in jobs]))


if __name__ == "__main__":
    main()
