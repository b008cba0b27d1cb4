"""The DeepSpeed configuration built from the flags, and the configuration mistakes it refuses."""
import json

import pytest

from utils.engine.ds_config import deepspeed_config, resolve_dtype
from utils.errors import UserError
from utils.flags import step_parser


def _args(*extra):
    return step_parser(2).parse_args(["--model_name_or_path", "m", "--output_dir", "o", *map(str, extra)])


def test_batch_sizes_precision_and_offload():
    config = deepspeed_config(_args("--per_device_train_batch_size", 4, "--gradient_accumulation_steps", 3,
                                    "--zero_stage", 3, "--offload"), world_size=2, dtype="bf16")
    assert config["train_batch_size"] == 24 and config["train_micro_batch_size_per_gpu"] == 4
    assert config["bf16"]["enabled"] and not config["fp16"]["enabled"]
    assert config["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
    assert config["zero_optimization"]["offload_param"] == {"device": "cpu"}


def test_deepspeed_config_file_overrides(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"gradient_clipping": 0.5}))
    assert deepspeed_config(_args("--deepspeed_config", path), 1, "fp32")["gradient_clipping"] == 0.5


@pytest.mark.parametrize("extra, message", [
    (["--offload"], "--offload needs --zero_stage 1, 2 or 3"),
    (["--per_device_train_batch_size", 0], "--per_device_train_batch_size must be at least 1"),
    (["--deepspeed_config", "/nonexistent/ds.json"], "--deepspeed_config /nonexistent/ds.json"),
])
def test_configuration_mistakes(extra, message):
    with pytest.raises(UserError, match=message):
        deepspeed_config(_args(*extra), 1, "fp32")


def test_dtype_defaults_and_fp16_on_cpu():
    assert resolve_dtype(None, on_gpu=True) == "fp16" and resolve_dtype(None, on_gpu=False) == "fp32"
    with pytest.raises(UserError, match="fp16 does not run on CPU"):
        resolve_dtype("fp16", on_gpu=False)
