"""`python -m nsr_lightning [fit|evaluate] --help`: the usage, the config groups with their options
(read from the shipped configs) and the common keys with their defaults (from the composed
config, so never out of date); and the Hydra-like flags `--help`/`-h` and `--cfg [job|all]`."""

from __future__ import annotations

from importlib.resources import files

USAGE = """usage: python -m nsr_lightning fit|evaluate [group=option ...] [key=value ...] [--cfg job] [--help]

fit: train a policy            evaluate: n samples per problem, pass@k per data set
  python -m nsr_lightning fit objective=w_reinforce objective.lambda_pos=0.25 trainer.max_steps=50
  python -m nsr_lightning fit ckpt_path=last run_dir=runs/x     (continue a stopped run)
  python -m nsr_lightning evaluate model.path=runs/x/final_model data.datasets=[synthetic] n=16
  --cfg job    print the composed config and exit       --help, -h    this text, with the groups"""

COMMON_KEYS = {
    "fit": [
        "seed",
        "run_dir",
        "ckpt_path",
        "model.path",
        "model.dtype",
        "trainer.max_steps",
        "trainer.devices",
        "data.batch_size",
        "rollout.n",
        "rollout.sampling.max_new_tokens",
        "algo.lr",
        "algo.mini_batch_size",
        "checkpoint.every_n_steps",
        "checkpoint.keep",
        "callbacks.pass_at_k.n",
    ],
    "evaluate": [
        "seed",
        "run_dir",
        "model.path",
        "model.dtype",
        "device",
        "n",
        "data.datasets",
        "data.paths.NAME",
        "data.limit",
        "data.template",
        "sampling.temperature",
        "sampling.max_new_tokens",
        "chunk_size",
    ],
}
SHOWN = {"run_dir": "runs/<date>_<time> (a new folder)", "data.paths.NAME": "a JSONL, JSON or Parquet file"}
GROUPS = {  # the config groups each command composes (configs/<command>.yaml's defaults)
    "fit": [
        "objective",
        "model",
        "data",
        "rollout",
        "reward",
        "trainer",
        "logger",
        "callbacks",
        "experiment",
    ],
    "evaluate": ["preset", "model", "rollout", "reward", "logger"],
}


def split_flags(args: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, wants_help, wants_cfg): `--help`/`-h` and `--cfg [job|all|hydra]` removed."""
    overrides, wants_help, wants_cfg = [], False, False
    skip_next = False
    for i, arg in enumerate(args):
        if skip_next:
            skip_next = False
        elif arg in ("--help", "-h"):
            wants_help = True
        elif arg in ("--cfg", "-c"):
            wants_cfg = True
            skip_next = i + 1 < len(args) and args[i + 1] in ("job", "all", "hydra")
        elif arg.startswith("--cfg="):
            wants_cfg = True
        else:
            overrides.append(arg)
    return overrides, wants_help, wants_cfg


def options(group: str) -> list[str]:
    folder = files("nsr_lightning.configs").joinpath(group)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def help_text(command: str | None, cfg=None) -> str:
    """The usage; for a command also its groups and, given its default config, the common keys."""
    if command is None:
        return USAGE
    from omegaconf import OmegaConf

    lines = [USAGE, "", f"{command}: config groups (group=option)"]
    lines += [f"  {g + '=':<14}{'|'.join(options(g))}" for g in GROUPS[command]]
    lines += ["", f"{command}: common keys (key=value; default shown)"]
    for key in COMMON_KEYS[command]:
        value = None if cfg is None or "NAME" in key else OmegaConf.select(cfg, key, default=None)
        shown = SHOWN.get(key) or ("null" if value is None else value)
        lines.append(f"  {key:<34}{shown}")
    lines += [
        "",
        "Any key of the composed config (--cfg job) can be set; +key=value adds a key the config lacks.",
    ]
    if command == "fit":  # evaluate builds no Trainer: its device is `device=`
        lines += ["trainer.<arg>: any lightning.Trainer argument."]
    lines += ["Groups live in nsr_lightning/configs/."]
    return "\n".join(lines)
