"""Command line: Hydra composition and instantiation, nothing else.

`python -m nsr_lightning fit [overrides]`. The Hydra compose API is used (not @hydra.main), so
`fit` can stand before the overrides, the working directory never changes, and Lightning's
multi-process launcher can re-run the same command line in its child processes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

USAGE = """usage: python -m nsr_lightning fit [group=option ...] [key=value ...] [--cfg]

  objective=nsr|psr|w_reinforce|reinforce   the learning signal (default nsr)
  objective.lambda_pos=0.25                 W-REINFORCE's positive weight (and any other knob)
  trainer.max_steps=1 trainer.devices=2     any lightning.Trainer argument
  logger=csv|wandb|none   callbacks=default|none   run_dir=PATH   seed=N
  --cfg                                     print the composed config and exit
Config groups live in nsr_lightning/configs/ (see README)."""

COMMANDS = ("fit",)
RUN_DIR_ENV = "NSR_LIGHTNING_RUN_DIR"  # shared with Lightning's child processes


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    from nsr_lightning.models import ASSETS

    if not OmegaConf.has_resolver("nsr_asset"):
        OmegaConf.register_new_resolver("nsr_asset", lambda name: str(ASSETS / name))
    if not OmegaConf.has_resolver("nsr_mul"):  # e.g. FSDP's data-parallel size = devices x nodes
        OmegaConf.register_new_resolver("nsr_mul", lambda a, b: int(a) * int(b))


def compose(command: str, overrides: list[str]):
    """The composed config for `command`, with run_dir decided (and shared with child ranks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import open_dict

    _register_resolvers()
    overrides = [_quote_path(o) for o in overrides]
    with initialize_config_module(config_module="nsr_lightning.configs", version_base="1.3"):
        listed = hydra_compose(
            config_name=command, overrides=[o for o in overrides if not o.startswith("trainer.")]
        )
        # Any lightning.Trainer argument may be set as trainer.<name>=value, listed in the YAML or not
        # (an unknown name is then refused by Trainer itself, with its own message).
        overrides = [_add_unlisted_trainer_key(o, listed.get("trainer", {})) for o in overrides]
        cfg = hydra_compose(config_name=command, overrides=overrides)
    # Lightning's child processes (LOCAL_RANK set) reuse the parent's folder; a fresh run gets its own.
    inherited = os.environ.get(RUN_DIR_ENV) if "LOCAL_RANK" in os.environ else None
    run_dir = cfg.get("run_dir") or inherited or f"runs/{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    run_dir = str(Path(run_dir).expanduser().resolve())
    os.environ[RUN_DIR_ENV] = run_dir
    with open_dict(cfg):
        cfg.run_dir = run_dir
    return cfg


def _quote_path(override: str) -> str:
    """ckpt_path=.../epoch=0-step=2.ckpt: Lightning's checkpoint names hold '=', which Hydra's
    override grammar refuses unless the value is quoted; quote it for the user."""
    key, _, value = override.partition("=")
    if key == "ckpt_path" and "=" in value and value[:1] not in ("'", '"'):
        return f"{key}='{value}'"
    return override


def _add_unlisted_trainer_key(override: str, trainer_cfg) -> str:
    key = override.split("=", 1)[0]
    if key.startswith("trainer.") and "=" in override and key.split(".")[1] not in trainer_cfg:
        return "+" + override
    return override


def build_fit(cfg):
    """Instantiate everything `fit` needs; user errors surface here, before any training."""
    import lightning as L
    import transformers
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from nsr_lightning.callbacks import RolloutCallback
    from nsr_lightning.models import load_tokenizer
    from nsr_lightning.module import RLVRModule

    transformers.logging.disable_progress_bar()  # one "Loading weights" bar per rank is noise
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(cfg.model.path)
    objective = instantiate(cfg.objective)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    engine = instantiate(cfg.rollout.engine, tokenizer=tokenizer)
    reward = instantiate(cfg.reward)
    rollout = RolloutCallback(
        engine, reward, n=cfg.rollout.n, sampling=OmegaConf.to_container(cfg.rollout.sampling), seed=cfg.seed
    )
    callbacks = [rollout] + [instantiate(c) for c in cfg.callbacks.values()]
    loggers = [instantiate(c) for c in cfg.logger.values()]
    algo = OmegaConf.to_container(cfg.algo)
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    # A strategy given as an object (trainer=fsdp8: ModelParallelStrategy) rather than a name
    if isinstance(trainer_args.get("strategy"), dict):
        trainer_args["strategy"] = instantiate(trainer_args["strategy"])
    trainer = L.Trainer(
        **trainer_args, logger=loggers or False, callbacks=callbacks, default_root_dir=cfg.run_dir
    )
    module = RLVRModule(  # last: it loads the weights
        model_path=cfg.model.path,
        dtype=cfg.model.dtype,
        objective=objective,
        seed=cfg.seed,
        fsdp=OmegaConf.to_container(cfg.fsdp) if "fsdp" in cfg else None,
        **algo,
    )
    return trainer, module, datamodule


def run_fit(cfg, trainer, module, datamodule) -> None:
    from omegaconf import OmegaConf

    from nsr_lightning.fsdp import full_state_dict

    if trainer.is_global_zero:
        os.makedirs(cfg.run_dir, exist_ok=True)
        OmegaConf.save(cfg, os.path.join(cfg.run_dir, "config.yaml"), resolve=True)
        print(f"objective: {module.objective.name} {module.objective.config()}", flush=True)
    for logger in trainer.loggers:
        logger.log_hyperparams({"objective": module.objective.config(), **OmegaConf.to_container(cfg)})
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    state = full_state_dict(module.model)  # a collective under FSDP2: every rank takes part
    if trainer.is_global_zero:
        final = os.path.join(cfg.run_dir, "final_model")
        module.model.save_pretrained(final, state_dict=state)
        datamodule.tokenizer.save_pretrained(final)
        print(f"\nlogs:        {cfg.run_dir}", flush=True)
        for logger in trainer.loggers:
            print(f"  {type(logger).__name__:<12} {getattr(logger, 'log_dir', None) or logger.save_dir}")
        print(f"final model: {final}", flush=True)


def _one_message(e: BaseException) -> str:
    """The innermost user-facing message (Hydra wraps constructor errors)."""
    while e.__cause__ is not None and isinstance(e.__cause__, (ValueError, TypeError)):
        e = e.__cause__
    return str(e).split("Config search path:")[0].strip()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"error: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}\n\n{USAGE}",
            file=sys.stderr,
        )
        return 2
    print_cfg = "--cfg" in overrides
    overrides = [o for o in overrides if o != "--cfg"]
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from nsr_lightning.errors import UserError

    try:  # everything a user can get wrong fails here, before any training
        cfg = compose(command, overrides)
        if print_cfg:
            print(OmegaConf.to_yaml(cfg, resolve=True))
            return 0
        trainer, module, datamodule = build_fit(cfg)
    except (UserError, ValueError, TypeError, HydraException, OmegaConfBaseException) as e:
        print(f"error: {_one_message(e)}", file=sys.stderr)
        return 2
    run_fit(cfg, trainer, module, datamodule)
    return 0
