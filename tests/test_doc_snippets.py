"""The reward-model snippets of the README and docs/reward-scores.md run as written, under transformers 4.51.0 and
5.x, against tiny exports, and give the trainer's scores."""
import json
import math
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import CPU_ENV, ROOT, run_step2
from utils.data.formatting import format_text
from utils.evaluation.reward_report import write_normalization
from utils.evaluation.scoring import RewardScorer

DOCS = [ROOT / "README.md", ROOT / "docs" / "reward-scores.md"]
MODEL_PATH = re.compile(r'"(out/[\w./-]+)"')
QUESTION, ANSWER = "What is the capital of France?", "The capital of France is Paris."


def snippets() -> list[tuple[str, str]]:
    """(where, code) of every python block that loads a model from an out/ path."""
    found = []
    for doc in DOCS:
        for i, code in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)):
            if MODEL_PATH.search(code):
                found.append((f"{doc.relative_to(ROOT)} python block {i + 1}", code))
    return found


@pytest.fixture(scope="module")
def exports(opt_dir, llama_chat_dir, pair_files, tmp_path_factory) -> dict[str, str]:
    """out/*chat* paths: a --template chat export; any other out/ path: a dschat one with normalization constants."""
    out = {}
    for name, base, template in (("plain", opt_dir, "dschat"), ("chat", llama_chat_dir, "chat")):
        out[name] = str(tmp_path_factory.mktemp(name) / "rm")
        run_step2(["--model_name_or_path", base, "--data_path", pair_files[0], "--eval_data_path", pair_files[1],
                   "--data_split", "0,1,0", "--template", template, "--per_device_train_batch_size", 16,
                   "--max_seq_len", 96, "--learning_rate", 3e-3, "--dropout", 0.0, "--dtype", "fp32",
                   "--output_dir", out[name]])
    write_normalization(out["plain"], {"mean": 0.5, "std": 2.0, "min": -3.0, "max": 4.0, "fitted_on": 10})
    return out


def _run_all(codes: list[str], tmp_path, pythonpath: str | None) -> list[float]:
    """Each snippet in a namespace of its own, all in one fresh process; the `score` each leaves."""
    runner = tmp_path / "run_snippets.py"
    runner.write_text(textwrap.dedent(f"""
        import json, transformers
        scores = []
        for code in json.loads({json.dumps(json.dumps(codes))}):
            namespace = {{}}
            exec(compile(code, "snippet", "exec"), namespace)
            scores.append(namespace["score"])
        print(json.dumps([transformers.__version__, scores]))
    """))
    env = os.environ | CPU_ENV | ({"PYTHONPATH": pythonpath} if pythonpath else {})
    proc = subprocess.run([sys.executable, str(runner)], capture_output=True, text=True, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_snippet_runs_in_both_versions_and_scores_as_the_trainer(exports, transformers4, tmp_path):
    found = snippets()
    assert len(found) >= 6, [where for where, _ in found]  # README's pipeline, and one per idiom in the docs
    codes = [MODEL_PATH.sub(lambda m: json.dumps(exports["chat" if "chat" in m.group(1) else "plain"]), code)
             for _, code in found]
    plain, chat = RewardScorer(exports["plain"]), RewardScorer(exports["chat"])
    expected = {
        "plain": plain.score([format_text(QUESTION, ANSWER, "dschat")], 1)[0][0],
        "chat": chat.score([format_text(QUESTION, ANSWER, "chat", chat.tokenizer)], 1)[0][0],
    }
    for version, scores in (_run_all(codes, tmp_path, str(transformers4)), _run_all(codes, tmp_path, None)):
        for (where, code), score in zip(found, scores):
            assert isinstance(score, float) and math.isfinite(score), f"{where} under {version}"
            if QUESTION in code and ANSWER in code and "###" not in code:  # the same exchange as the trainer's
                kind = "chat" if "out/chat" in code else "plain"
                assert score == pytest.approx(expected[kind], abs=1e-4), f"{where} under {version}"
