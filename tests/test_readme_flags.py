"""Each step's README lists in its flag tables every flag its parser has and no other, with the choices and defaults
the parser has wherever a table states them (planted: a flag dropped from a table, a choice or default changed)."""
import re
from pathlib import Path

import pytest

from utils.flags import step_parser

ROOT = Path(__file__).resolve().parents[1]
READMES = {1: "training/step1_supervised_finetuning/README.md", 2: "training/step2_reward_model_finetuning/README.md",
           3: "training/step3_rlhf_finetuning/README.md"}
FLAG = re.compile(r"--[a-z0-9_]+")


def flag_rows(text: str) -> list[dict[str, str]]:
    """The rows of every table whose first column holds flags (headed `flag`, or `DeepSpeed-Chat` in step 3's table
    of what becomes of DeepSpeed-Chat's flags), as {column: cell}, the first column as `flag`."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if header is None:
            header = cells
        elif header[0] in ("flag", "DeepSpeed-Chat") and not set(line) <= set("|-: "):
            rows.append(dict(zip(["flag", *header[1:]], cells)))
    return rows


def stated(rows: list[dict[str, str]]) -> tuple[dict[str, set[str]], dict[str, str]]:
    """The choices and defaults the tables state: `--flag {a,b}` or `--flag [a|b]`, `--flag` (default), and a
    `values` column of `choice` (default), `other`, on a row of one flag."""
    choices, defaults = {}, {}
    for row in rows:
        cell = row["flag"]
        for name, listed in re.findall(r"`(--[a-z0-9_]+) [{\[]([^}\]]+)[}\]]`", cell):
            choices[name] = set(re.split(r",|\\\|", listed))
        for name, value in re.findall(r"`(--[a-z0-9_]+)[^`]*` \(([-+.e\d]+)\)", cell):
            defaults[name] = value
        names = FLAG.findall(cell)
        if "values" in row and len(names) == 1 and "`" in row["values"]:
            values = row["values"]
            choices[names[0]] = set(re.findall(r"`([^`]+)`", values))
            default = re.search(r"`([^`]+)` \(default\)", values)
            if default:
                defaults[names[0]] = default.group(1)
    return choices, defaults


@pytest.mark.parametrize("step", sorted(READMES))
def test_readme_flag_tables_match_the_parser(step):
    actions = {option: action for action in step_parser(step)._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"}
    rows = flag_rows((ROOT / READMES[step]).read_text())
    listed = {name for row in rows for name in FLAG.findall(row["flag"])}
    missing, unknown = sorted(set(actions) - listed), sorted(listed - set(actions))
    assert not missing, f"{READMES[step]}: flags the parser has, in no flag table: {missing}"
    assert not unknown, f"{READMES[step]}: flags in its tables that the parser lacks: {unknown}"
    choices, defaults = stated(rows)
    assert choices and defaults, "the tables state some choices and defaults"
    for name, values in choices.items():
        assert values == {str(c) for c in actions[name].choices or []}, f"{READMES[step]}: {name}'s choices"
    for name, value in defaults.items():
        default = actions[name].default
        same = float(value) == default if isinstance(default, (int, float)) else value == str(default)
        assert same, f"{READMES[step]}: {name}'s default is {default!r}, the README says {value}"
