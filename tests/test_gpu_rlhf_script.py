"""benchmarks/gpu_rlhf.sh, step 3's GPU benchmark, on its CPU path: no GPU is at hand in CI, so this checks that
the script runs and reports; its figures come from a GPU run (docs/gpu.md)."""
import os
import subprocess
import sys

from conftest import CPU_ENV, ROOT


def test_gpu_rlhf_benchmark_runs_its_cpu_path(tmp_path):
    """The three PPO runs (ZeRO-2, ZeRO-3 gathering the actor to generate, ZeRO-3 partitioned) finish, and the
    report has a row for each: answers per second, generation's share of the step time, each model's weights."""
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_rlhf.sh"), str(tmp_path), "cpu"], capture_output=True,
                          text=True, env=os.environ | CPU_ENV | {"PY": sys.executable}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in (tmp_path / "report.md").read_text().splitlines()
            if line.startswith("| zero")]
    assert [row[0].strip() for row in rows] == ["zero2", "zero3_gather", "zero3_partitioned"]
    for name, answers, share, peak, held in rows:
        assert float(answers) > 0 and 0 < float(share.strip(" %")) < 100 and peak.strip() == "-"
        assert all(model in held for model in ("actor", "reference", "reward model", "critic"))
