"""Fixtures built on the fly: tiny models and tokenizers, preference files, and a way to run the entrypoints."""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType

import psutil
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import utils.objectives.answer_rewards as answer_rewards
from utils import distributed
from utils.data.synthetic import generate_pairs
from utils.models.tiny import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
STEP1 = ROOT / "training" / "step1_supervised_finetuning" / "main.py"
STEP2 = ROOT / "training" / "step2_reward_model_finetuning" / "main.py"
STEP3 = ROOT / "training" / "step3_rlhf_finetuning" / "main.py"
CPU_ENV = {"DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
os.environ.update(CPU_ENV)
torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 gives the subprocesses: the runs in this one add up alike


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


_RESERVED: list[socket.socket] = []


def free_port() -> str:
    """A port that stays free for the run it is given to, however long that run takes to bind it.

    The socket stays bound here, not listening and with SO_REUSEADDR, until the test process ends: the kernel then
    gives the port to no other socket (no bind to port 0, no outgoing connection), while the run's rendezvous,
    which sets SO_REUSEADDR too, listens on it. A port picked and let go would be anyone's until the run's rank 0
    binds it, tens of seconds later on a loaded machine; then a parallel test or any other connection could take it.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    _RESERVED.append(sock)
    return str(sock.getsockname()[1])


def _rank_outputs(logs: Path, launcher: str, nproc: int) -> list[tuple[str, str]]:
    """Each rank's (stdout, stderr) from the launcher's per-rank logs (none for one process); the deepspeed launcher
    writes both streams of a rank to one file, given here as its stdout."""
    def read(pattern: str) -> str:
        return "".join(path.read_text(errors="replace") for path in sorted(logs.glob(pattern)))

    if nproc == 1:
        return []
    if launcher == "deepspeed":
        return [(read(f"*_rank{rank}.log"), "") for rank in range(nproc)]
    return [(read(f"*/attempt_*/{rank}/stdout.log"), read(f"*/attempt_*/{rank}/stderr.log")) for rank in range(nproc)]


def _first_error(output: str) -> str:
    """What stopped a rank: its first traceback, to the exception's line, or its first `error:` line."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), start)
        return "\n".join(lines[start:end + 1])[-4000:]
    return next((line for line in lines if re.match(r"(error|preempted): ", line)), "no traceback, no error: line")


def _report(ranks: list[tuple[str, str]], stdout: str, stderr: str) -> str:
    """Each rank's first error and the end of its output, then the end of the launcher's (or the one process's)."""
    return ("".join(f"--- rank {rank}: {_first_error(out + err)}\n" for rank, (out, err) in enumerate(ranks))
            + "".join(f"--- rank {rank}, the end of its output ---\n{(out + err)[-3000:]}\n"
                      for rank, (out, err) in enumerate(ranks))
            + f"--- {'the launcher' if ranks else 'its output'} ---\n{stdout[-3000:]}\n{stderr[-5000:]}")


def run_step(script: Path, args: list, nproc: int = 1, launcher: str = "deepspeed", check: bool = True,
             env: dict[str, str] | None = None, fresh: bool = False) -> subprocess.CompletedProcess:
    """Run a step as a user would: its main() with the command line for one process, the deepspeed launcher or
    torchrun for more.

    One process runs in this one (`run_here`): a subprocess would spend most of a tiny run importing torch,
    transformers and deepspeed again. `fresh` runs it as plain python instead, for a run compared to the last digit
    with one that had to be a subprocess (a killed one): what earlier runs leave in this process can move the last
    digits of a sum. Several processes write a log per rank; the result's stdout and stderr are the
    launcher's followed by each rank's, in rank order. A failure or a hang names each rank's first traceback, so that
    the rank which failed first is known whatever the others printed after it (the deepspeed launcher names the last
    rank's command whichever rank failed)."""
    if nproc == 1 and not fresh:
        return run_here(script, args, check, env)
    logs = Path(tempfile.mkdtemp(prefix="rank-logs-"))
    port = free_port()
    if nproc == 1:
        cmd = [sys.executable, str(script)]
    elif launcher == "deepspeed":
        cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(nproc), "--master_port", port,
               f"--enable_each_rank_log={logs}", str(script)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", port,
               "--log-dir", str(logs), "--redirects", "3", str(script)]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    try:
        with subprocess.Popen(cmd + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=base | CPU_ENV | (env or {}), cwd="/") as popen:
            try:
                stdout, stderr = popen.communicate(timeout=600)
            except (subprocess.TimeoutExpired, pytest.fail.Exception) as hang:  # ours, or pytest-timeout's
                # every rank, not only the launcher (torchrun starts each rank in a session of its own)
                for process in [*psutil.Process(popen.pid).children(recursive=True), psutil.Process(popen.pid)]:
                    with contextlib.suppress(psutil.NoSuchProcess):  # it may have ended meanwhile
                        process.kill()
                stdout, stderr = popen.communicate()
                raise AssertionError(f"{script.parent.name} hung and was killed:\n"
                                     + _report(_rank_outputs(logs, launcher, nproc), stdout, stderr)) from hang
        ranks = _rank_outputs(logs, launcher, nproc)
    finally:
        shutil.rmtree(logs)
    if check and popen.returncode != 0:
        raise AssertionError(f"{script.parent.name} failed ({popen.returncode}):\n" + _report(ranks, stdout, stderr))
    return subprocess.CompletedProcess(popen.args, popen.returncode, stdout + "".join(out for out, _ in ranks),
                                       stderr + "".join(err for _, err in ranks))


run_step1 = functools.partial(run_step, STEP1)
run_step2 = functools.partial(run_step, STEP2)
run_step3 = functools.partial(run_step, STEP3)


def run_here(script: Path | ModuleType, args: list, check: bool = True, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess:
    """A one-process run of `script` (a script's path, or a `python -m` module) in this process, as its command line
    runs it from /, in `env`: its exit status and what it printed. What a run changes in the process (the
    environment, the signal handlers it installs, the working directory, what DeepSpeed patches) is put back after
    it."""
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        os.environ.update(env or {})
        os.chdir("/")
        sys.argv = [str(script), *map(str, args)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.MonkeyPatch.context() as patch:
            # DeepSpeed keeps the groups it derives from the first process group: the world of one stays for the
            # next run in this process. A test's main_exits before it does not keep this run out of it.
            patch.setattr(distributed, "shutdown", lambda: None)
            patch.setattr(distributed, "init_distributed", JOIN_PROCESS_GROUP)
            # ZeRO-3 puts its own torch.nn.functional.linear in place and leaves it there, which changes the last
            # digits of every later run's sums
            patch.setattr(torch.nn.functional, "linear", torch.nn.functional.linear)
            if isinstance(env, Injected):
                patch.setattr(answer_rewards, "reward_scores", letter_e)
            try:
                (entrypoint(script) if isinstance(script, Path) else script).main()
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            except Exception:  # as the interpreter would: the traceback on stderr, exit status 1
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
    command = [sys.executable, *([str(script)] if isinstance(script, Path) else ["-m", script.__name__]),
               *map(str, args)]
    if check and code != 0:
        raise AssertionError(f"{shlex.join(command)} failed ({code}):\n{out.getvalue()[-3000:]}\n"
                             f"{err.getvalue()[-5000:]}")
    return subprocess.CompletedProcess(command, code, out.getvalue(), err.getvalue())


@functools.cache
def entrypoint(script: Path):
    """A script (training/*/main.py, rw_eval.py) as a module, loaded once."""
    spec = importlib.util.spec_from_file_location(f"{script.parent.name}_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


JOIN_PROCESS_GROUP = distributed.init_distributed


def main_exits(script: Path | ModuleType, args: list, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """An entrypoint's main() (a script's, or a `python -m` module's) in this process, as its command line runs it,
    for a run that stops at a mistake before it trains: the exit status, stdout and stderr. No process group starts,
    so none outlives the test."""
    monkeypatch.setattr(sys, "argv", [str(script), *map(str, args)])
    monkeypatch.setattr(distributed, "init_distributed", lambda: None)
    capsys.readouterr()  # what the test printed before is not this run's
    with pytest.raises(SystemExit) as stop:
        (entrypoint(script) if isinstance(script, Path) else script).main()
    out, err = capsys.readouterr()
    return stop.value.code, out, err


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
    """Run tests/score_like_users.py on `jobs`: in a fresh process under transformers 4.51.0 when `transformers4` is
    given, else in this one, under the project's own."""
    script = ROOT / "tests" / "score_like_users.py"
    if transformers4 is None:
        return json.loads(json.dumps([entrypoint(script).run(job) for job in jobs]))  # as the subprocess reads
    path = tmp_path / f"jobs-{len(list(tmp_path.glob('jobs-*')))}.json"
    path.write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, cwd="/",
                          env=os.environ | CPU_ENV | {"PYTHONPATH": str(transformers4)})
    if proc.returncode != 0:
        raise AssertionError(f"score_like_users.py failed ({proc.returncode}):\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


# Step 3's tiny actor, reward model and injected reward, shared by its test files.
def letter_e(reward_model, reward_tokenizer, prompts, rollout, k, template, batch_size=32, shared=True) -> torch.Tensor:
    """The answer's reward: how many times it writes the letter e, which varies from answer to answer even under a
    random policy: a rule that moves within a few updates from a random start, where a real reward model would need a
    trained policy. It stands in for `utils.objectives.answer_rewards.reward_scores`."""
    return torch.tensor([float(answer.count("e")) for answer in rollout.answers])


class Injected(dict):
    """The environment that makes `letter_e` step 3's reward in a subprocess, through a sitecustomize.py on
    PYTHONPATH; `run_here` patches the same rule in for a run in this process."""


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
def inject(tmp_path_factory) -> Injected:
    folder = tmp_path_factory.mktemp("inject")
    (folder / "sitecustomize.py").write_text("import torch\nimport utils.objectives.answer_rewards as answer_rewards"
                                             "\n\n\n" + inspect.getsource(letter_e)
                                             + "\n\nanswer_rewards.reward_scores = letter_e\n")
    return Injected(PYTHONPATH=f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


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
