"""Command line: Hydra composition and instantiation, nothing else.

`python -m nsr_lightning fit|evaluate [overrides]`. The Hydra compose API is used (not @hydra.main), so
`fit` can stand before the overrides, the working directory never changes, and Lightning's
multi-process launcher can re-run the same command line in its child processes.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path

USAGE = """usage: python -m nsr_lightning fit|evaluate [group=option ...] [key=value ...] [--cfg]

fit: train a policy

  objective=nsr|psr|w_reinforce|reinforce   the learning signal (default nsr)
  objective.lambda_pos=0.25                 W-REINFORCE's positive weight (and any other knob)
  trainer.max_steps=1 trainer.devices=2     any lightning.Trainer argument
  logger=csv|wandb|none   callbacks=default|none   run_dir=PATH   seed=N
  --cfg                                     print the composed config and exit

evaluate: n samples per problem, pass@k per data set (resumes in the same run_dir)
  model.path=PATH|HUB_ID|RUN.ckpt           the model (a Lightning checkpoint loads into its base model)
  data.datasets=[math500,aime25,amc23]      data sets; data.paths.math500=FILE.jsonl for local files
  preset=tiny|qwen25_math|qwen3_nonthinking n, sampling and prompt template of a model family
  n=64 sampling.temperature=0.6 reward=math|synthetic rollout=hf
Config groups live in nsr_lightning/configs/ (see README)."""

COMMANDS = ("fit", "evaluate")
OPEN_MAPPINGS = ("trainer.", "data.paths.", "data.fields.")  # keys that need no '+' to be added
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
            config_name=command, overrides=[o for o in overrides if not o.startswith(OPEN_MAPPINGS)]
        )
        # Any lightning.Trainer argument may be set as trainer.<name>=value, listed in the YAML or not
        # (an unknown name is then refused by Trainer itself, with its own message); the same for the
        # per-data-set maps data.paths.<name> and data.fields.<name>.
        overrides = [_add_unlisted_key(o, listed) for o in overrides]
        cfg = hydra_compose(config_name=command, overrides=overrides)
    # Lightning's child processes (LOCAL_RANK set) reuse the parent's folder; a fresh run gets its own.
    inherited = os.environ.get(RUN_DIR_ENV) if "LOCAL_RANK" in os.environ else None
    run_dir = cfg.get("run_dir") or inherited or f"runs/{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    run_dir = str(Path(run_dir).expanduser().resolve())
    os.environ[RUN_DIR_ENV] = run_dir
    with open_dict(cfg):
        cfg.run_dir = run_dir
    return cfg


def load_config(command: str, overrides: list[str]):
    """The composed, checked config; any problem with it is one UserError (never another type)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from nsr_lightning.errors import UserError
    from nsr_lightning.preflight import check_config

    try:
        cfg = compose(command, overrides)
    except (HydraException, OmegaConfBaseException, ValueError, TypeError) as e:
        raise UserError(_one_message(e)) from None
    if command == "fit":
        check_config(cfg)
    return cfg


def _quote_path(override: str) -> str:
    """`model.path=runs/x/epoch=0-step=9.ckpt` as Hydra needs it: a value holding '=' quoted."""
    key, sep, value = override.partition("=")
    if sep and "=" in value and value[:1] not in "'\"[{" and "'" not in value:
        return f"{key}='{value}'"
    return override


def _add_unlisted_key(override: str, listed) -> str:
    from omegaconf import OmegaConf

    key = override.split("=", 1)[0]
    for prefix in OPEN_MAPPINGS:
        if key.startswith(prefix) and "=" in override:
            mapping = OmegaConf.select(listed, prefix[:-1], default=None)
            if mapping is not None and key[len(prefix) :].split(".")[0] not in mapping:
                return "+" + override
    return override


def build_fit(cfg):
    """Instantiate everything `fit` needs; user errors surface here, before any training."""
    import lightning as L
    import transformers
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from nsr_lightning.callbacks import RolloutCallback
    from nsr_lightning.checkpoint import AtomicCheckpointIO, periodic_checkpoints, resolve_ckpt_path
    from nsr_lightning.models import load_tokenizer
    from nsr_lightning.module import RLVRModule

    transformers.logging.disable_progress_bar()  # one "Loading weights" bar per rank is noise
    resolve_ckpt_path(cfg.get("ckpt_path"), cfg.run_dir)  # a missing checkpoint fails now
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
    plugins = []
    if trainer_args.get("enable_checkpointing", True):
        callbacks.append(periodic_checkpoints(cfg.checkpoint.every_n_steps, cfg.checkpoint.keep))
        if not isinstance(trainer_args.get("strategy"), dict):  # FSDP2 writes its own shards
            plugins.append(AtomicCheckpointIO())
    if isinstance(trainer_args.get("strategy"), dict):
        trainer_args["strategy"] = instantiate(trainer_args["strategy"])
    trainer = L.Trainer(
        **trainer_args,
        logger=loggers or False,
        callbacks=callbacks,
        plugins=plugins or None,
        default_root_dir=cfg.run_dir,
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


def build_evaluate(cfg):
    """Instantiate everything `evaluate` needs; returns a function that runs it."""
    import lightning as L
    import torch
    import transformers
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from nsr_lightning.data import build_prompt, load_problems
    from nsr_lightning.data.datamodule import encode
    from nsr_lightning.evaluation import evaluate
    from nsr_lightning.models import load_any_policy, load_tokenizer
    from nsr_lightning.rollout import SamplingConfig

    transformers.logging.disable_progress_bar()
    L.seed_everything(cfg.seed, verbose=False)
    data = cfg.data
    paths, fields = OmegaConf.to_container(data.paths), OmegaConf.to_container(data.fields)
    problems = {}
    for name in data.datasets:
        limit = data.limit or (data.get("synthetic_problems") if name == "synthetic" else None)
        problems[name] = load_problems(
            name, path=paths.get(name), fields=fields.get(name), limit=limit, seed=data.synthetic_seed
        )
    sampling = SamplingConfig(**OmegaConf.to_container(cfg.sampling))
    model, tokenizer_source = load_any_policy(cfg.model.path, cfg.model.dtype, cfg.model.get("base_model"))
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    tokenizer = load_tokenizer(tokenizer_source)
    build_prompt(tokenizer, "1+1", data.template)  # a bad template fails here
    rows = {name: [encode(p, tokenizer, data.template) for p in ps] for name, ps in problems.items()}
    engine = instantiate(cfg.rollout.engine, tokenizer=tokenizer)
    reward = instantiate(cfg.reward)
    chunk_size = cfg.chunk_size or max(1, getattr(engine, "batch_size", 8 * cfg.n) // cfg.n)
    loggers = [instantiate(c) for c in cfg.logger.values()]
    settings = {
        "model": str(cfg.model.path),
        "n": cfg.n,
        "sampling": OmegaConf.to_container(cfg.sampling),
        "seed": cfg.seed,
        "template": data.template,
        "chunk_size": chunk_size,
        "reward": OmegaConf.to_container(cfg.reward).get("_target_"),
    }
    args = dict(engine=engine, model=model, reward=reward, n=cfg.n, sampling=sampling, seed=cfg.seed)
    args |= dict(out_dir=cfg.run_dir, chunk_size=chunk_size, settings=settings, loggers=loggers)
    return lambda: evaluate(rows, **args)


def run_evaluate(cfg, run) -> None:
    from omegaconf import OmegaConf

    os.makedirs(cfg.run_dir, exist_ok=True)
    OmegaConf.save(cfg, os.path.join(cfg.run_dir, "config.yaml"), resolve=True)
    print(
        f"evaluating {cfg.model.path} on {', '.join(cfg.data.datasets)} (n={cfg.n}) -> {cfg.run_dir}",
        flush=True,
    )
    try:
        run()
    except KeyboardInterrupt:
        print(f"\ninterrupted; re-run with run_dir={cfg.run_dir} to resume", file=sys.stderr, flush=True)
        raise
    print(f"\nresults:     {cfg.run_dir}/summary.json", flush=True)


def run_fit(cfg, trainer, module, datamodule) -> None:
    from omegaconf import OmegaConf

    from nsr_lightning.checkpoint import resolve_ckpt_path
    from nsr_lightning.errors import UserError
    from nsr_lightning.fsdp import full_state_dict

    if trainer.is_global_zero:
        os.makedirs(cfg.run_dir, exist_ok=True)
        OmegaConf.save(cfg, os.path.join(cfg.run_dir, "config.yaml"), resolve=True)
        print(f"objective: {module.objective.name} {module.objective.config()}", flush=True)
    for logger in trainer.loggers:
        logger.log_hyperparams({"objective": module.objective.config(), **OmegaConf.to_container(cfg)})
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.run_dir)
    if cfg.get("ckpt_path") == "last" and trainer.is_global_zero:
        print(
            f"resuming from {ckpt_path}" if ckpt_path else "ckpt_path=last: no checkpoint yet, starting fresh"
        )
    try:
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=cfg.checkpoint.weights_only
        )
    except pickle.UnpicklingError as e:  # weights-only loading met something else: nothing of it ran
        raise UserError(
            f"ckpt_path: {ckpt_path} holds more than weights and plain data, so weights-only loading refused "
            f"it ({str(e).splitlines()[0][:200]}); only for a file you trust: checkpoint.weights_only=false"
        ) from None
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
    from nsr_lightning.quiet import silence_known_noise

    silence_known_noise()  # the Lightning tip and known deprecation warnings, by their exact messages
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
    from nsr_lightning.preflight import check_run_folders

    try:  # everything a user can get wrong fails here, before any training
        cfg = load_config(command, overrides)
        if print_cfg:
            print(OmegaConf.to_yaml(cfg, resolve=True))
            return 0
        check_run_folders(cfg, command)  # writable, room to write: before loading anything
        if command == "evaluate":
            run = build_evaluate(cfg)
        else:
            trainer, module, datamodule = build_fit(cfg)
    except (UserError, ValueError, TypeError, HydraException, OmegaConfBaseException) as e:
        print(f"error: {_one_message(e)}", file=sys.stderr)
        return 2
    if command == "evaluate":
        try:
            run_evaluate(cfg, run)
        except UserError as e:  # found while running: a resume with other settings, ...
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    from nsr_lightning.errors import RunStopped

    try:
        run_fit(cfg, trainer, module, datamodule)
    except UserError as e:  # found while starting: a checkpoint refused by weights-only loading
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except RunStopped as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0
