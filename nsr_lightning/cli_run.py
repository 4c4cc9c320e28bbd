"""Running what nsr_lightning/cli_build.py built: `fit` and `evaluate`, their stops by signal
(SIGTERM, Ctrl-C) with the command that resumes them, and the exit code of each end."""

from __future__ import annotations

import os
import pickle
import signal
import sys

from nsr_lightning.run_dir import resume_command, save_final_model, set_signal

STOP_EXIT = 128  # a run stopped by signal s exits 128 + s (SIGTERM: 143, SIGINT: 130)


def run_evaluate(cfg, run, overrides: list[str]) -> int:
    from omegaconf import OmegaConf

    os.makedirs(cfg.run_dir, exist_ok=True)
    OmegaConf.save(cfg, os.path.join(cfg.run_dir, "config.yaml"), resolve=True)
    print(
        f"evaluating {cfg.model.path} on {', '.join(cfg.data.datasets)} (n={cfg.n}) -> {cfg.run_dir}",
        flush=True,
    )

    def on_sigterm(signum, frame) -> None:
        raise KeyboardInterrupt(signum)

    previous = set_signal(signal.SIGTERM, on_sigterm)
    try:
        run()
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM above: the finished problems are on disk
        signum = e.args[0] if e.args else signal.SIGINT
        hint = resume_command("evaluate", overrides, cfg.run_dir)
        print(f"\ninterrupted; to resume: {hint}", file=sys.stderr, flush=True)
        return STOP_EXIT + signum
    finally:
        if previous is not None:
            set_signal(signal.SIGTERM, previous)
    print(f"\nresults:     {cfg.run_dir}/summary.json", flush=True)
    return 0


def _checked_ckpt_path(cfg, trainer, module) -> str | None:
    """The checkpoint to resume from, refused in one line when it cannot continue this run."""
    from nsr_lightning.checkpoint import check_resumable, read_meta, resolve_ckpt_path
    from nsr_lightning.errors import UserError

    report = (lambda line: print(line, file=sys.stderr, flush=True)) if trainer.is_global_zero else None
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.run_dir, report=report)
    if cfg.get("ckpt_path") == "last" and trainer.is_global_zero:
        print(
            f"resuming from {ckpt_path}" if ckpt_path else "ckpt_path=last: no checkpoint yet, starting fresh"
        )
    if ckpt_path is None:
        return None
    try:
        meta = read_meta(ckpt_path)
    except pickle.UnpicklingError as e:  # weights-only loading met something else: nothing of it ran
        if not cfg.checkpoint.weights_only:
            return ckpt_path  # a file the user trusts: Lightning loads it in full, unchecked here
        raise UserError(
            f"ckpt_path: {ckpt_path} holds more than weights and plain data, so weights-only loading refused "
            f"it ({str(e).splitlines()[0][:200]}); only for a file you trust: checkpoint.weights_only=false"
        ) from None
    except (RuntimeError, OSError, EOFError) as e:
        raise UserError(f"ckpt_path: {ckpt_path} does not load ({str(e).splitlines()[0][:200]})") from None
    check_resumable(meta, ckpt_path, int(cfg.trainer.max_steps), module.run_identity())
    return ckpt_path


def run_fit(cfg, trainer, module, datamodule, overrides: list[str] | None = None) -> int:
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from omegaconf import OmegaConf

    from nsr_lightning.callbacks import RunEndCallback
    from nsr_lightning.errors import UserError
    from nsr_lightning.fsdp import full_state_dict

    ckpt_path = _checked_ckpt_path(cfg, trainer, module)  # before any file of this try is written
    if trainer.is_global_zero:
        os.makedirs(cfg.run_dir, exist_ok=True)
        OmegaConf.save(cfg, os.path.join(cfg.run_dir, "config.yaml"), resolve=True)
        print(f"objective: {module.objective.name} {module.objective.config()}", flush=True)
    for logger in trainer.loggers:
        try:  # the first write: W&B's online login happens here
            logger.log_hyperparams(
                {"objective": module.objective.config(), **OmegaConf.to_container(cfg, resolve=True)}
            )
        except Exception as e:
            if not type(e).__module__.startswith("wandb"):
                raise
            raise UserError(f"logger.wandb: W&B refused the run ({str(e).splitlines()[0][:200]})") from None
    run_end = next(c for c in trainer.callbacks if isinstance(c, RunEndCallback))
    set_signal(signal.SIGTERM, run_end.record)  # Lightning's handler from fit's start (it chains this one)
    try:
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=cfg.checkpoint.weights_only
        )
    except SystemExit as e:  # SIGTERMException, or Lightning's sys.exit(1) after a second Ctrl-C
        if not isinstance(e, SIGTERMException) and run_end.signal_received is None:
            raise
        signum = run_end.signal_received or signal.SIGTERM
        if trainer.is_global_zero:
            mid_step = not isinstance(e, SIGTERMException)
            _print_stopped(cfg, signum, trainer.global_step, mid_step=mid_step, overrides=overrides)
        return STOP_EXIT + signum
    state = full_state_dict(module.model)  # a collective under FSDP2: every rank takes part
    if trainer.is_global_zero:
        final = save_final_model(module.model, datamodule.tokenizer, state, cfg.run_dir)
        print(f"\nlogs:        {cfg.run_dir}", flush=True)
        for logger in trainer.loggers:
            print(f"  {type(logger).__name__:<12} {getattr(logger, 'log_dir', None) or logger.save_dir}")
        print(f"final model: {final}", flush=True)
    return 0


def _print_stopped(cfg, signum: int, step: int, mid_step: bool, overrides: list[str] | None) -> None:
    from nsr_lightning.checkpoint import find_last

    name = signal.Signals(signum).name
    last = find_last(cfg.run_dir, report=None)
    where = f"in step {step} (not saved)" if mid_step else f"after {step} completed steps"
    saved = f"the newest checkpoint: {last}" if last else "no checkpoint was written"
    if not cfg.trainer.get("enable_checkpointing", True):
        saved += " (trainer.enable_checkpointing=false)"
    hint = resume_command("fit", overrides if overrides is not None else sys.argv[2:], cfg.run_dir)
    print(f"\nstopped by {name} {where}; {saved}\nto resume: {hint}", file=sys.stderr, flush=True)
