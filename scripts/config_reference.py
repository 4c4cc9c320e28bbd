"""Write docs/config.md, the config reference, from the shipped configs and the rule table.

    python scripts/config_reference.py           # (re)write docs/config.md
    python scripts/config_reference.py --check   # exit 1 if docs/config.md is out of date

Every key of `fit` and `evaluate`: its default (Hydra's composed config, so an objective's knobs
come from its class signature), what it accepts (nsr_lightning/config_rules.py) and what it means
(the YAML comment on or above the key, else the comment of the same key in another config file,
else the comment beside the objective's constructor argument). tests/test_config_reference.py
fails when the committed page differs from what this writes.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
OUT = ROOT / "docs" / "config.md"
COMMAND = "python scripts/config_reference.py"
KEY = re.compile(r"^(\s*)([A-Za-z_][\w-]*)\s*:(.*)$")
GROUPS = ["objective", "model", "data", "rollout", "reward", "trainer", "logger", "callbacks"]
GLOBAL_GROUPS = ["preset", "experiment"]  # `# @package _global_` files: the keys each one sets
TARGET = (
    "the class built from this node (`module.Class`; an own class works too: [extending.md](extending.md))"
)


def _split_comment(rest: str) -> tuple[str, str]:
    """(value, comment) of the text after `key:`."""
    m = re.search(r"(^|\s)#", rest)
    return (rest, "") if m is None else (rest[: m.start()], rest[m.end() :].strip())


def yaml_comments(path: Path, prefix: str) -> dict[str, str]:
    """Full key -> its comment: the comment lines right above it (same indentation), the one on
    its line, and the comment-only lines under it indented deeper. The file's opening comment
    block describes the file, not its first key."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    last: tuple[str, int] | None = None
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if not line.lstrip().startswith("#")), len(lines))
    for line in lines[start:]:
        text = line.strip()
        indent = len(line) - len(line.lstrip())
        if not text or text.startswith("- "):
            block, last = [], None
        elif text.startswith("#"):
            comment = text.lstrip("#").strip()
            if last is not None and indent > last[1]:
                out[last[0]] = f"{out[last[0]]} {comment}".strip()
            else:
                block, last = [*block, comment], None
        elif m := KEY.match(line):
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, m.group(2)))
            full = ".".join(([prefix] if prefix else []) + [k for _, k in stack])
            out[full] = " ".join([*block, _split_comment(m.group(3))[1]]).strip()
            block, last = [], (full, indent)
    return out


def file_description(path: Path) -> str:
    """The file's opening comment block, without Hydra's `@package` line."""
    text = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if "@package" not in line:
            text.append(line.lstrip("#").strip())
    return " ".join(text)


def signature_comments() -> dict[str, str]:
    """objective.<argument> -> the comment beside it in the objective classes' constructors."""
    from nsr_lightning import objectives

    out: dict[str, str] = {}
    for cls in (
        objectives.Objective,
        objectives.Reinforce,
        objectives.GRPO,
        objectives.NGRPO,
        objectives.PPO,
    ):
        for line in inspect.getsource(cls.__init__).splitlines():
            m = re.match(r"\s*(\w+)\s*:[^=#]*=[^#]*#\s*(.+)$", line)
            if m:
                out.setdefault(f"objective.{m.group(1)}", m.group(2).strip())
    return out


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _defaults(command: str) -> dict[str, str]:
    """The group options a command composes by default (its YAML's defaults list)."""
    from omegaconf import OmegaConf

    out = {}
    for item in OmegaConf.load(CONFIGS / f"{command}.yaml").defaults:
        if not isinstance(item, str):
            ((group, option),) = item.items()
            out[group] = option
    return out


def flatten(node, prefix: str) -> dict:
    """Leaves of a container by full key; an empty mapping or a list is a leaf."""
    if isinstance(node, dict) and node:
        out = {}
        for k, v in node.items():
            out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: node}


def _compose(command: str, overrides: list[str]):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from nsr_lightning.cli import _register_resolvers

    _register_resolvers()
    with initialize_config_module(config_module="nsr_lightning.configs", version_base="1.3"):
        return OmegaConf.to_container(compose(config_name=command, overrides=overrides), resolve=False)


def _text(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(_text, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _show(value) -> str:
    return "`" + _text(value).replace("|", "\\|") + "`"


class Reference:
    def __init__(self) -> None:
        self.own: dict[Path, dict[str, str]] = {}
        self.general: dict[str, str] = {}

    def comments(self, path: Path, prefix: str, general: bool = True) -> dict[str, str]:
        """`path`'s comments by key; `general`: also the meaning of the same keys elsewhere."""
        if path not in self.own:
            self.own[path] = yaml_comments(path, prefix)
            for key, text in self.own[path].items():
                if text and general:
                    self.general.setdefault(key, text)
        return self.own[path]

    def meaning(self, key: str, own: dict[str, str], values: dict, general: bool = True) -> str:
        """The key's comment in its file, else (general) the same key's elsewhere, else what its
        place says: a class's argument, a Trainer argument, an interpolation."""
        value, parent, name = values.get(key), *key.rpartition(".")[::2]
        text = own.get(key) or (self.general.get(key) if general else "") or ""
        if text or not general:
            pass
        elif name == "_target_":
            text = TARGET
        elif f"{parent}._target_" in values:
            text = f"argument `{name}` of `{values[f'{parent}._target_'].rpartition('.')[2]}`"
        elif parent == "trainer":
            text = f"`lightning.Trainer({name}=...)`"
        elif isinstance(value, str) and value.startswith("${") and value.endswith("}"):
            text = f"follows `{value[2:-1]}`"
        return text.replace("|", "\\|")

    def table(self, values: dict, own: dict[str, str], head: str = "default", general: bool = True):
        """One row per leaf; a commented mapping (a section) gets a row of its own above its keys."""
        from nsr_lightning.config_rules import BY_KEY

        values = {k: v for k, v in values.items() if k and v != {} or "." in k}
        if not values:
            return ["Sets no key of its own.", ""]
        rows = [f"| key | {head} | accepted | {'meaning' if general else 'note'} |", "|---|---|---|---|"]
        sections = set()
        for key, value in values.items():
            parts = key.split(".")
            for i in range(1, len(parts)):
                section = ".".join(parts[:i])
                if own.get(section) and section not in sections:
                    sections.add(section)
                    rows.append(f"| `{section}` | | | {self.meaning(section, own, values)} |")
            accepted = BY_KEY[key][0].replace("|", "\\|") if key in BY_KEY else "-"
            rows.append(
                f"| `{key}` | {_show(value)} | {accepted} | {self.meaning(key, own, values, general)} |"
            )
        return [*rows, ""]


def render() -> str:
    """The whole page."""
    from nsr_lightning.config_check import CONTEXTS, NEW_TOKENS
    from nsr_lightning.config_rules import CROSS

    ref = Reference()
    fit, evaluate = _defaults("fit"), _defaults("evaluate")
    files = {c: CONFIGS / f"{c}.yaml" for c in ("fit", "evaluate")}
    # where a key without a comment of its own takes one: the commands' files, the objectives'
    # signatures, the shared group files (never another option of its group: its value differs)
    for path in files.values():
        ref.comments(path, "")
    for key, text in signature_comments().items():
        ref.general.setdefault(key, text)
    for shared in sorted(CONFIGS.glob("*/shared/*.yaml")):  # included `@_here_` in their group
        ref.comments(shared, shared.parent.parent.name)
    for group in GROUPS:
        for option in _options(group):
            ref.comments(CONFIGS / group / f"{option}.yaml", group, general=False)

    out = [
        "# Config reference",
        "",
        f"Generated by `{COMMAND}` from the files under `configs/` (values and comments), the",
        "objectives' constructor signatures (their knobs' defaults) and the rule table",
        "`nsr_lightning/config_rules.py` (accepted values; `-`: no rule here, the class that receives the",
        "value checks it). Do not edit by hand: `tests/test_config_reference.py` fails when this page",
        "is out of date. Set any key as `key=value`; choose a group's option as `group=option`;",
        "`trainer.<name>=value` passes any `lightning.Trainer` argument; `--cfg job` prints the",
        "composed config.",
        "",
    ]
    for command, path in files.items():
        groups = fit if command == "fit" else evaluate
        chosen = ", ".join(f"`{g}={o}`" for g, o in groups.items() if o not in (None, "null"))
        out += [f"## `{command}`", "", file_description(path), "", f"Default groups: {chosen}.", ""]
        values = flatten(_own_values(path), "")
        out += ref.table(values, ref.own[path])
    out += ["## Groups", ""]
    for group in GROUPS + GLOBAL_GROUPS:
        used = [c for c, d in (("fit", fit), ("evaluate", evaluate)) if group in d]
        where = ", ".join(
            f"`{c}` (default {_default((fit if c == 'fit' else evaluate)[group])})" for c in used
        )
        out += [f"### `{group}`", "", f"Used by {where}. Options: {', '.join(_options(group))}.", ""]
        for option in _options(group):
            path = CONFIGS / group / f"{option}.yaml"
            out += [f"#### `{group}={option}`", "", file_description(path), ""]
            if group in GLOBAL_GROUPS:
                sets = [f"`{k}={v}`" for k, v in _group_defaults(path)]
                if sets:
                    out += ["Composes: " + ", ".join(sets) + ".", ""]
                own = yaml_comments(path, "")
                out += ref.table(flatten(_own_values(path), ""), own, head="value", general=False)
            else:
                node = _compose(used[0], [f"{group}={option}"]).get(group) or {}
                out += ref.table(flatten(node, group), ref.own[path])
    out += ["## Rules between keys", "", "Checked right after composing, before anything loads:", ""]
    out += [f"- `{key}` with {', '.join(f'`{k}`' for k in others)}" for key, others, _, _ in CROSS]
    tokens, contexts = (", ".join(f"`{k}`" for k in keys) for keys in (NEW_TOKENS, CONTEXTS))
    out += [
        f"- each of {tokens} below the smallest of {contexts} that is set (the prompt needs room too)",
        "",
    ]
    return "\n".join(out)


def _default(option) -> str:
    return "none" if option in (None, "null") else f"`{option}`"


def _own_values(path: Path) -> dict:
    """The keys a YAML file sets itself (its defaults list left out)."""
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    node.pop("defaults", None)
    return node


def _group_defaults(path: Path) -> list[tuple[str, str]]:
    """(group, option) pairs of a global file's defaults list (`override /model: x`, `paper_base`)."""
    from omegaconf import OmegaConf

    pairs = []
    for item in OmegaConf.load(path).get("defaults", []):
        if isinstance(item, str):
            pairs.append(("experiment", item) if item != "_self_" else None)
        else:
            ((key, value),) = item.items()
            pairs.append((key.replace("override /", ""), value))
    return [p for p in pairs if p]


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
