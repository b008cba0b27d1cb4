"""Step 3: improve the step-1 policy with the step-2 reward model (RLOO, RAFT, PPO, online DPO) or with preference
pairs (DPO); export it as a causal LM."""
from __future__ import annotations

from utils.errors import exit_on_error
from utils.flags import parse_flags
from utils.run_files import exit_if_finished


@exit_on_error
def main() -> None:
    args, warnings = parse_flags(3)  # before torch, deepspeed and transformers load: their mistakes answer at once
    exit_if_finished(args)  # a launcher's rerun skips a finished step at once
    from utils.objectives.rlhf import run_step3

    run_step3(args, warnings)


if __name__ == "__main__":
    main()
