"""The launchers in training_scripts/, as users run them: every one prints (DRY_RUN=1) commands that the entrypoints'
own parsers accept, takes its overrides from the environment, stops early on a missing input, and trains for real on
CPU on one process, through a DeepSpeed hostfile, and inside a (faked) SLURM job."""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import time
import sys
from pathlib import Path

import pytest

from conftest import CPU_ENV, ROOT, free_port, read_metrics
from utils.flags import DATA_FLAGS, given_flags, parse_flags, step_parser

SCRIPTS = ROOT / "training_scripts"
LAUNCHERS = sorted(p.relative_to(ROOT).as_posix() for p in SCRIPTS.glob("*/*/*.sh")) + sorted(
    p.relative_to(ROOT).as_posix() for p in SCRIPTS.glob("demo/*.sh"))
MULTI_NODE = [name for name in LAUNCHERS if "/multi_node/" in name]
OVERRIDES = ("MODEL", "REWARD_MODEL", "DATA", "OUTPUT", "ZERO_STAGE", "NUM_GPUS", "HOSTFILE", "LAUNCHER", "MASTER_ADDR",
             "MASTER_PORT", "SFT_FLAGS", "REWARD_FLAGS", "RLHF_FLAGS")
VENV_PATH = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]


def _module_parser(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._parser()


PARSERS = {
    "training/step1_supervised_finetuning/main.py": lambda: step_parser(1),
    "training/step2_reward_model_finetuning/main.py": lambda: step_parser(2),
    "training/step3_rlhf_finetuning/main.py": lambda: step_parser(3),
    "training/step1_supervised_finetuning/prompt_eval.py":
        lambda: _module_parser(ROOT / "training/step1_supervised_finetuning/prompt_eval.py"),
    "rw_eval.py": lambda: _module_parser(ROOT / "rw_eval.py"),
}
HELPERS = {"utils.models.tiny", "utils.models.gguf_import", "utils.evaluation.run_summary",
           "utils.evaluation.seed_table"}  # python -m tools the demos call


def launch(script: str | Path, env: dict, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in OVERRIDES and not k.startswith("SLURM_")}
    return subprocess.run(["bash", str(ROOT / script), *args], capture_output=True, text=True, cwd=cwd,
                          env=clean | CPU_ENV | {"PATH": VENV_PATH} | env)


def dry_run(script: str, env: dict, *args: str, cwd: Path = ROOT) -> list[list[str]]:
    proc = launch(script, env | {"DRY_RUN": "1"}, *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


def parsed_commands(commands: list[list[str]]) -> list[tuple[list[str], str, object]]:
    """Each command as (launcher words, entrypoint, parsed flags); python -m helpers are checked by name only."""
    found = []
    for words in commands:
        entry = next((i for i, w in enumerate(words) if w.endswith(".py")), None)
        if entry is None:
            assert words[1] == "-m" and words[2] in HELPERS, words
            continue
        name = Path(words[entry]).resolve().relative_to(ROOT).as_posix()
        found.append((words[:entry], name, PARSERS[name]().parse_args(words[entry + 1:])))
    return found


def training(commands: list[list[str]]) -> list[tuple[list[str], object]]:
    return [(prefix, args) for prefix, name, args in parsed_commands(commands) if name.endswith("main.py")]


@pytest.fixture()
def hostfile(tmp_path: Path) -> Path:
    path = tmp_path / "hostfile"
    path.write_text("# one line per node\nworker-1 slots=8\nworker-2 slots=8\n")
    return path


@pytest.mark.parametrize("script", LAUNCHERS)
def test_every_launcher_prints_commands_its_entrypoints_accept(script, hostfile, tmp_path):
    env = {"HOSTFILE": str(hostfile)} if script in MULTI_NODE else {}
    words = dry_run(ROOT / script, env, cwd=tmp_path)
    commands = parsed_commands(words)
    runs = [(prefix, args) for prefix, name, args in commands if name.endswith("main.py")]
    assert runs, "a launcher trains something"
    for command in words:  # no command trains on the built-in demo data or passes a flag its run does not read
        entry = next((i for i, w in enumerate(command) if w.endswith("main.py")), None)
        if entry is not None:
            step = int(Path(command[entry]).parent.name[len("step")])
            assert set(DATA_FLAGS) & set(given_flags(step, command[entry + 1:])), command
            assert parse_flags(step, command[entry + 1:])[1] == [], command
    for prefix, args in runs:
        assert prefix[0] == "deepspeed" and args.resume
        assert args.tensorboard_path.startswith(args.output_dir)
    header = (ROOT / script).read_text().splitlines()[1]
    assert header.startswith("# Step") or header.startswith("# The"), "the header says what the script runs"
    assert list(tmp_path.iterdir()) == [hostfile], "a dry run writes nothing"


@pytest.mark.parametrize("script", ["training_scripts/opt/single_gpu/run_350m.sh",
                                    "training_scripts/opt/single_node/run_1.3b.sh",
                                    "training_scripts/llama/single_node/run_open_llama_3b.sh",
                                    "training_scripts/demo/run_tiny.sh"])
def test_overrides_and_extra_flags_reach_every_training_command(script, opt_dir, pair_files, tmp_path):
    out = tmp_path / "run"
    env = {"MODEL": str(opt_dir), "REWARD_MODEL": "my-org/reward-base", "DATA": f"{pair_files[0]} synthetic",
           "OUTPUT": str(out), "ZERO_STAGE": "1", "NUM_GPUS": "2", "MASTER_PORT": "29611",
           "SFT_FLAGS": "--seed 1", "REWARD_FLAGS": "--seed 2  --dropout 0.25", "RLHF_FLAGS": "--seed 3"}
    runs = [(prefix, name, args) for prefix, name, args in parsed_commands(dry_run(script, env, "--seed", "7", "--data_split", "1,1,1"))
            if name.endswith("main.py")]
    assert [args.seed for _, name, args in runs] == [int(name[len("training/step")]) for _, name, _ in runs], \
        "each step's own flags, after the launcher's arguments"
    assert [args.dropout for _, name, args in runs if "step2" in name] == [0.25]
    assert runs[0][2].model_name_or_path == str(opt_dir)
    ports = {prefix.pop(2) for prefix, name, args in runs}
    assert ports == ({"29611", "29612", "29613"} if "demo/" in script else {"29611"}), \
        "MASTER_PORT, and one above it for each other lane of the demo, whose launchers run beside the first lane's"
    # the demo's GRPO lane has data of its own: a warm start from MODEL on synthetic_math, and GRPO from it
    math = [(prefix, name, args) for prefix, name, args in runs if "math" in args.data_path[0]]
    assert [(Path(args.output_dir).relative_to(out).as_posix(), args.data_path, args.model_name_or_path)
            for _, _, args in math] == ([("step1_math", ["synthetic_math:4000"], str(opt_dir)),
                                         ("step3_rlhf/grpo", ["synthetic_math:8000"], str(out / "step1_math"))]
                                        if "demo/" in script else [])
    for prefix, name, args in runs:
        assert prefix == ["deepspeed", "--master_port", "--num_gpus", "2"]
        assert args.data_path == [str(pair_files[0]), "synthetic"] or (prefix, name, args) in math
        assert Path(args.output_dir).is_relative_to(out)
        assert args.zero_stage == 1 and args.data_split == "1,1,1"
        if "step3" in name and (prefix, name, args) not in math:
            assert args.critic_zero_stage in (None, 1) and args.model_name_or_path == str(out / "step1_sft")
    assert all(args.model_name_or_path in (str(out / "step1_sft"), env["REWARD_MODEL"])
               for prefix, name, args in runs[1:] if "step1" not in name and (prefix, name, args) not in math), \
        "steps 2 and 3 start from the step-1 output, or from REWARD_MODEL for a reward model"


def test_hostfile_launch_command(hostfile, tmp_path):
    prefix, _ = training(dry_run("training_scripts/opt/multi_node/run_66b.sh", {"HOSTFILE": str(hostfile)}))[0]
    assert prefix == ["deepspeed", "--master_port", "29500", "--hostfile", str(hostfile), "--master_addr", "worker-1"]
    one = tmp_path / "one_host"
    one.write_text("localhost slots=2\n")
    prefix, _ = training(dry_run("training_scripts/opt/multi_node/run_350m.sh", {"HOSTFILE": str(one)}))[0]
    assert prefix[-2:] == ["localhost", "--no_ssh_check"], "one host runs here, without ssh"


@pytest.mark.parametrize("env, message", [
    ({"MODEL": "/no/such/model"}, "MODEL=/no/such/model: no such directory"),
    ({"DATA": "Dahoas/rm-static missing.jsonl"}, "DATA: missing.jsonl: no such file"),
    ({"DATA": " "}, "DATA is empty"),
    ({"ZERO_STAGE": "4"}, "ZERO_STAGE=4: use 0, 1, 2 or 3"),
    ({"NUM_GPUS": "zero"}, "NUM_GPUS=zero"),
    ({"HOSTFILE": "/no/hostfile"}, "HOSTFILE=/no/hostfile: no such file"),
])
def test_missing_or_bad_inputs_stop_before_anything_runs(env, message, tmp_path):
    proc = launch("training_scripts/opt/single_gpu/run_350m.sh", env | {"OUTPUT": str(tmp_path / "out")})
    assert proc.returncode == 2 and message in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "out").exists()


def test_multi_node_launcher_needs_a_hostfile_or_slurm(tmp_path):
    proc = launch("training_scripts/opt/multi_node/run_350m.sh", {"OUTPUT": str(tmp_path / "out")})
    assert proc.returncode == 2 and "set HOSTFILE" in proc.stderr and "launch.sbatch" in proc.stderr
    empty = tmp_path / "hostfile"
    empty.write_text("# nothing\n\n")
    proc = launch("training_scripts/opt/multi_node/run_350m.sh", {"HOSTFILE": str(empty)})
    assert proc.returncode == 2 and "lists no hosts" in proc.stderr


def test_runs_beside_one_another_get_one_thread_and_a_failure_stops_the_launcher(tmp_path):
    """common.sh's lanes: each run on one thread, its output in its log and one line on the console as it ends; a
    failed run stops the launcher, naming its log, once the other lane's run has ended, and no run starts after it."""
    script = tmp_path / "lanes.sh"
    script.write_text(f'source {SCRIPTS / "common.sh"}\nOUTPUT={tmp_path}/out\nprepare\n'
                      'beside 0 run "$OUTPUT/a.log" bash -c \'sleep 1; echo "threads $OMP_NUM_THREADS"\'\n'
                      'beside 1 run "$OUTPUT/b.log" bash -c "echo broken; exit 3"\n'
                      'beside 0 run "$OUTPUT/c.log" echo started after the failure\n'
                      'settle\necho never reached\n')
    proc = launch(script, {"DATA": "synthetic", "ZERO_STAGE": "0", "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 1 and "never reached" not in proc.stdout
    assert f"[lane 1] failed (status 3): see {tmp_path}/out/b.log" in proc.stderr
    done = [line for line in proc.stdout.splitlines() if line.startswith("[lane 0] done in ")]
    assert len(done) == 1 and done[0].endswith(f" s: {tmp_path}/out/a.log: threads 1")
    assert (tmp_path / "out/b.log").read_text().endswith("broken\n") and "broken" not in proc.stdout
    assert not (tmp_path / "out/c.log").exists()


def _tiny_run_env(opt_dir: Path, pair_files: tuple[Path, Path], out: Path) -> dict:
    return {"MODEL": str(opt_dir), "DATA": str(pair_files[0]), "OUTPUT": str(out), "MASTER_PORT": free_port()}


TINY_FLAGS = ("--eval_data_path", "{eval}", "--data_split", "0,1,0", "--per_device_train_batch_size", "8",
              "--max_seq_len", "96", "--learning_rate", "3e-3")


def _tiny_flags(pair_files: tuple[Path, Path]) -> list[str]:
    return [flag.format(eval=pair_files[1]) for flag in TINY_FLAGS]


def test_single_gpu_launcher_trains_for_real(opt_dir, pair_files, tmp_path):
    """run_350m.sh pointed at a tiny local model and data; rerunning it resumes, finds the run finished, and exits 0."""
    out = tmp_path / "launcher"
    proc = launch("training_scripts/opt/single_gpu/run_350m.sh", _tiny_run_env(opt_dir, pair_files, out),
                  *_tiny_flags(pair_files), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    log = (out / "training.log").read_text()
    assert "accuracy=" in log and "--resume" in log.splitlines()[2]
    assert json.loads((out / "training_args.json").read_text())["weight_decay"] == 0.1
    assert (out / "model.safetensors").exists() and (out / "training_curves.png").stat().st_size > 10_000
    assert f"{out.name}: accuracy" in proc.stdout, "the summary line"
    again = launch("training_scripts/opt/single_gpu/run_350m.sh", _tiny_run_env(opt_dir, pair_files, out),
                   *_tiny_flags(pair_files), cwd=tmp_path)
    assert again.returncode == 0 and "nothing to resume" in again.stdout


def test_two_processes_through_a_localhost_hostfile(opt_dir, pair_files, tmp_path):
    """The multi-node path (deepspeed --hostfile) on one host with 2 slots: 2 processes, so half the steps."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    out = tmp_path / "run"
    proc = launch("training_scripts/opt/multi_node/run_350m.sh",
                  _tiny_run_env(opt_dir, pair_files, out) | {"HOSTFILE": str(hostfile)}, *_tiny_flags(pair_files))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    steps = [r["step"] for r in read_metrics(out) if r["split"] == "train"]
    assert max(steps) == 256 // (8 * 2), "8 pairs per process (the extra flag wins) on 2 processes"
    assert (out / "eval_results.json").exists()


def _fake_slurm_bin(tmp_path: Path, hosts: list[str]) -> Path:
    """scontrol that expands the node list to `hosts` and records requeues, and srun that starts the tasks here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "scontrol": f"""#!/usr/bin/env bash
echo "$@" >> {tmp_path}/scontrol.calls
[ "$1 $2" = "show hostnames" ] && printf '%s\\n' {' '.join(hosts)}
exit 0
""",
        "srun": """#!/usr/bin/env bash
# --nodes N --ntasks-per-node T --kill-on-bad-exit=1 COMMAND...: N*T tasks on this machine.
nodes=$2 per_node=$4; shift 5
pids=()
for ((i = 0; i < nodes * per_node; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$((i % per_node)) SLURM_NODEID=$((i / per_node)) SLURM_NTASKS=$((nodes * per_node)) \\
    "$@" & pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
""",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _slurm_env(bin_dir: Path, nodelist: str, nodes: int, per_node: int) -> dict:
    return {"PATH": f"{bin_dir}{os.pathsep}{VENV_PATH}", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": nodelist,
            "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_NTASKS_PER_NODE": str(per_node), "SLURM_SUBMIT_DIR": str(ROOT)}


SBATCH = "training_scripts/slurm/launch.sbatch"


def test_sbatch_derives_rendezvous_and_launches_one_task_per_gpu(tmp_path):
    env = _slurm_env(_fake_slurm_bin(tmp_path, ["gpu07", "gpu08"]), "gpu[07-08]", 2, 4) | {"DRY_RUN": "1"}
    proc = launch(SBATCH, env, "training_scripts/opt/multi_node/run_66b.sh", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    banner, *commands = proc.stdout.splitlines()
    assert "rendezvous gpu07:24242" in banner
    assert (tmp_path / "scontrol.calls").read_text() == "show hostnames gpu[07-08]\n"
    runs = training([shlex.split(command) for command in commands])
    assert len(runs) == 3, "steps 1, 2 and 3"
    for prefix, args in runs:
        assert prefix == ["env", "MASTER_ADDR=gpu07", "MASTER_PORT=24242", "srun", "--nodes", "2",
                          "--ntasks-per-node", "4", "--kill-on-bad-exit=1", "bash", str(SCRIPTS / "slurm/task.sh"),
                          "python3", "-u"]
        assert args.seed == 3 and args.resume


def test_slurm_task_variables_become_torch_distributed_ones():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
           "MASTER_ADDR": "gpu07", "MASTER_PORT": "24242"}
    proc = launch(SCRIPTS / "slurm/task.sh", env, "env")
    assert {"RANK=5", "WORLD_SIZE=8", "LOCAL_RANK=1", "NODE_RANK=1"} <= set(proc.stdout.splitlines())
    first = launch(SCRIPTS / "slurm/task.sh", env | {"SLURM_PROCID": "4", "SLURM_LOCALID": "0"}, "true")
    assert "node 1" in first.stderr and "ranks from 4" in first.stderr and proc.stderr == ""


@pytest.mark.parametrize("status, requeued", [(75, True), (0, False), (1, False)])
def test_sbatch_requeues_only_a_preempted_run(status, requeued, tmp_path):
    fake = tmp_path / "launcher.sh"
    fake.write_text(f"echo launched with $LAUNCHER $NUM_GPUS; exit {status}\n")
    env = _slurm_env(_fake_slurm_bin(tmp_path, ["gpu07"]), "gpu07", 1, 8)
    proc = launch(SBATCH, env, str(fake))
    assert proc.returncode == status and "launched with srun 8" in proc.stdout
    calls = (tmp_path / "scontrol.calls").read_text().splitlines()
    assert ("requeue 4242" in calls) == requeued


def test_slurm_preemption_requeues_and_the_rerun_resumes(opt_dir, pair_files, tmp_path):
    """The SLURM path end to end, with srun faked as 2 local tasks, each a plain python process: USR1 (what
    --signal=USR1@180 sends) reaches each task; they checkpoint and exit 75 through the launcher's log pipe, the job
    requeues itself, and the rerun of the same job continues from the checkpoint to the end."""
    out = tmp_path / "run"
    env = _slurm_env(_fake_slurm_bin(tmp_path, ["localhost"]), "localhost", 1, 2)
    env |= _tiny_run_env(opt_dir, pair_files, out) | {"PYTHON": sys.executable}
    epochs = 4  # 16 steps each on 2 tasks: the first logged step comes long before the end
    args = ["training_scripts/opt/multi_node/run_350m.sh", *_tiny_flags(pair_files), "--num_train_epochs", str(epochs)]
    clean = {k: v for k, v in os.environ.items() if k not in OVERRIDES and not k.startswith("SLURM_")}
    job = subprocess.Popen(["bash", str(ROOT / SBATCH), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, cwd=ROOT, env=clean | CPU_ENV | {"PATH": VENV_PATH} | env)
    deadline = time.time() + 240
    while not ((out / "metrics.jsonl").exists() and "train" in (out / "metrics.jsonl").read_text()):
        assert job.poll() is None and time.time() < deadline, job.stdout.read()[-3000:]
        time.sleep(0.5)
    subprocess.run(["pkill", "-USR1", "-f", f"^[^ ]*python[^ ]* -u [^ ]*main.py --output_dir {out} "])  # the tasks only
    log = job.communicate(timeout=240)[0]
    assert job.returncode == 75, log[-3000:]
    assert "requeue 4242" in (tmp_path / "scontrol.calls").read_text()
    saved = sorted((out / "checkpoints").glob("step*"))
    assert len(saved) == 1 and "preempted" in log
    again = launch(SBATCH, env, *args)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "resum" in again.stdout.lower() and (out / "eval_results.json").exists() and "node 0" in again.stdout
    steps = [r["step"] for r in read_metrics(out) if r["split"] == "train"]
    assert steps == list(range(1, epochs * 16 + 1)), \
        "every step once: the rerun continued where the checkpoint left, 8 pairs per task on 2 tasks"
