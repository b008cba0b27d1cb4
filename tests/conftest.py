"""Fixtures built on the fly: tiny models and tokenizers, preference files, and a way to run the entrypoints."""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from utils.data.synthetic import generate_pairs
from utils.models.tiny import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
STEP1 = ROOT / "training" / "step1_supervised_finetuning" / "main.py"
STEP2 = ROOT / "training" / "step2_reward_model_finetuning" / "main.py"
STEP3 = ROOT / "training" / "step3_rlhf_finetuning" / "main.py"
CPU_ENV = {"DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
os.environ.update(CPU_ENV)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build) -> Path:
    """The folder `build(folder)` fills, built once per test run: the pytest-xdist workers share it through a lock,
    so that a trained model several test files need is trained once, not once per file."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's own folder, above each worker's
    out, done = root / "built_once" / name, root / "built_once" / f"{name}.complete"
    out.parent.mkdir(exist_ok=True)
    with FileLock(f"{out}.lock"):
        if not done.exists():  # else another worker built it
            shutil.rmtree(out, ignore_errors=True)
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def opt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OPT-like: BOS == EOS == </s>, and a <pad> token. One folder for both workers, as step 3's models start from
    it."""
    return built_once(tmp_path_factory, "opt", functools.partial(build_tiny_model, family="opt", hidden=32, layers=2,
                                                                 heads=2, vocab_size=600))


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Llama-like: BOS <s> differs from EOS </s>, and there is no pad token."""
    return build_tiny_model(tmp_path_factory.mktemp("llama"), "llama", hidden=32, layers=2, heads=2, vocab_size=600)


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GPT-2-like: <|endoftext|> is BOS, EOS and pad, as in GPT-2 fine-tunes; no BOS before a text."""
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2", hidden=32, layers=2, heads=2, vocab_size=600)


LLAMA3_LIKE_CHAT = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                    "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="session")
def llama_chat_dir(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Llama-like model with a chat template that writes the BOS and ends each turn with the EOS."""
    out = tmp_path_factory.mktemp("llama_chat")
    shutil.copytree(llama_dir, out, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    tokenizer.chat_template = LLAMA3_LIKE_CHAT
    tokenizer.save_pretrained(out)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def pair_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A train and an eval file of synthetic pairs in the local-file schema."""
    base = tmp_path_factory.mktemp("pairs")
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in generate_pairs(300, seed=7)]
    return write_jsonl(base / "train.jsonl", rows[:256]), write_jsonl(base / "eval.jsonl", rows[256:])


def free_port() -> str:
    """A port no one listens on now, so that runs in parallel test workers never share a rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def run_step(script: Path, args: list, nproc: int = 1, launcher: str = "deepspeed", check: bool = True,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a step as a user would: plain python for one process, the deepspeed launcher or torchrun for more."""
    port = free_port()
    if nproc == 1:
        cmd = [sys.executable, str(script)]
    elif launcher == "deepspeed":
        cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(nproc), "--master_port", port,
               str(script)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", port,
               str(script)]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                          env=base | CPU_ENV | (env or {}), cwd="/", timeout=600)  # a hang fails, not stalls CI
    if check and proc.returncode != 0:
        # with several processes, the rank that failed first is often not the one whose traceback ends stderr
        errors = dict.fromkeys(line for line in proc.stderr.splitlines() if re.search(r"\w(Error|Exception): ", line))
        raise AssertionError(f"{script.parent.name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}\nerror lines:\n" + "\n".join(list(errors)[:20]))
    return proc


run_step1 = functools.partial(run_step, STEP1)
run_step2 = functools.partial(run_step, STEP2)
run_step3 = functools.partial(run_step, STEP3)


@pytest.fixture(scope="session")
def transformers4() -> Path:
    """transformers 4.51.0 (RewardBench's pin) and its tokenizers, installed once per virtual environment into a
    folder of their own, to go first on PYTHONPATH in a subprocess (tests/transformers4.txt)."""
    from filelock import FileLock

    target = Path(sys.prefix) / "transformers-4.51.0"
    with FileLock(f"{target}.lock"):  # test files on other workers may want it at the same time
        if not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                            "--target", str(target), "-r", str(ROOT / "tests" / "transformers4.txt")], check=True)
            (target / ".complete").touch()
    return target


def score_like_users(jobs: list[dict], tmp_path: Path, transformers4: Path | None = None) -> list[dict]:
    """Run tests/score_like_users.py on `jobs` in a fresh process, under transformers 4.51.0 when `transformers4` is
    given, else under the project's own."""
    path = tmp_path / f"jobs-{len(list(tmp_path.glob('jobs-*')))}.json"
    path.write_text(json.dumps(jobs))
    env = os.environ | CPU_ENV | ({"PYTHONPATH": str(transformers4)} if transformers4 else {})
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "score_like_users.py"), str(path)],
                          capture_output=True, text=True, env=env, cwd="/")
    if proc.returncode != 0:
        raise AssertionError(f"score_like_users.py failed ({proc.returncode}):\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


# Step 3's tiny actor, reward model and injected reward, shared by its test files.
# The answer's reward: how many times it writes the letter e, which varies from answer to answer even under a random
# policy: a rule that moves within a few updates from a random start, where a real reward model would need a trained
# policy.
LETTER_E = """
    import torch
    import utils.objectives.policy as policy

    def rule(reward_model, reward_tokenizer, prompts, rollout, k, template, batch_size=32, shared=True):
        return torch.tensor([float(answer.count("e")) for answer in rollout.answers])

    policy.reward_scores = rule
"""


def _build_step3_models(base: Path, out: Path) -> None:
    """Step 3's tiny actor and reward model, both from the tiny OPT base."""
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out / "rm")
    tokenizer.save_pretrained(out / "rm")
    run_step1(["--model_name_or_path", base, "--data_path", "synthetic:400", "--data_split", "1,0,0",
               "--num_train_epochs", 2, "--learning_rate", 3e-3, "--max_seq_len", 64, "--dropout", 0.0, "--dtype",
               "fp32", "--output_dir", out / "sft"])


@pytest.fixture(scope="session")
def step3_models(opt_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained once per run: every step-3 test file starts from them."""
    return built_once(tmp_path_factory, "step3_models", functools.partial(_build_step3_models, opt_dir))


@pytest.fixture(scope="session")
def reward_dir(step3_models: Path) -> Path:
    """A reward model with a (random) trained-looking head, on the tiny OPT base: the injected rule replaces its
    scores."""
    return step3_models / "rm"


@pytest.fixture(scope="session")
def actor_dir(step3_models: Path) -> Path:
    """A briefly fine-tuned policy: it ends about half of its answers, so that RAFT has finished answers to keep."""
    return step3_models / "sft"


@pytest.fixture(scope="module")
def inject(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inject")
    (folder / "sitecustomize.py").write_text(textwrap.dedent(LETTER_E))
    return {"PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def rlhf_args(actor, reward, out, *extra):
    return ["--actor_model_name_or_path", actor, "--critic_model_name_or_path", reward, "--data_path", "synthetic:200",
            "--data_split", "0,0,1", "--per_device_generation_batch_size", 4, "--per_device_training_batch_size", 4,
            "--num_generations", 4, "--max_prompt_seq_len", 32, "--max_answer_seq_len", 16, "--actor_learning_rate",
            1e-2, "--actor_dropout", 0.0, "--dtype", "fp32", "--eval_iters", 1, "--per_device_eval_batch_size", 8,
            "--lr_scheduler_type", "constant", "--output_dir", out, *extra]


def start_step3(args, inject):
    """Step 3 in a process group of its own, so that a signal reaches it as it reaches a job."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")} | CPU_ENV | inject
    return subprocess.Popen([sys.executable, str(STEP3), *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def wait_until(done, proc, timeout=300):
    deadline = time.time() + timeout
    while True:
        try:
            if done():
                return
        except (OSError, json.JSONDecodeError):  # not written yet, or a line half-written
            pass
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.01)
