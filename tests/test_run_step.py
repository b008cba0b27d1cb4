"""The harness's report of a failed multi-process run names each rank's first traceback, whatever the other ranks
print after it (planted: the launcher's output alone, as run_step once reported, keeps rank 0's last 5,000 characters
and loses rank 1's traceback)."""
import pytest

from conftest import run_step

# Rank 1 fails; rank 0, stopped by the launcher, writes 30,000 characters on its way out, as a stopped step does.
FAILS_ON_RANK_1 = """
import os, signal, sys, time

def stopped(signum, frame):
    print("rank 0 stopping " * 2000, file=sys.stderr, flush=True)
    sys.exit(75)

if os.environ["RANK"] == "1":
    time.sleep(1)
    raise ValueError("rank 1 stops here")
signal.signal(signal.SIGTERM, stopped)
time.sleep(60)
"""


@pytest.mark.parametrize("launcher", ["deepspeed", "torchrun"])
def test_a_failed_run_names_each_ranks_first_error(tmp_path, launcher):
    script = tmp_path / "fails.py"
    script.write_text(FAILS_ON_RANK_1)
    with pytest.raises(AssertionError) as failed:
        run_step(script, [], nproc=2, launcher=launcher)
    report = str(failed.value)
    assert "--- rank 0: no traceback, no error: line\n" in report, report[:3000]
    assert "--- rank 1: Traceback (most recent call last):\n" in report, report[:3000]
    assert '    raise ValueError("rank 1 stops here")\nValueError: rank 1 stops here\n' in report, report[:3000]
