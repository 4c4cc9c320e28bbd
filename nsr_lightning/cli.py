"""Command line: Hydra composition, then instantiation (cli_build.py) and running (cli_run.py);
every error a user can cause printed as one line (exit 2).

`python -m nsr_lightning fit|evaluate [overrides]`. The Hydra compose API is used (not @hydra.main), so
`fit` can stand before the overrides, the working directory never changes, and Lightning's
multi-process launcher can re-run the same command line in its child processes.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from nsr_lightning.cli_build import build_evaluate, build_fit
from nsr_lightning.cli_help import help_text, split_flags
from nsr_lightning.cli_run import run_evaluate, run_fit

__all__ = ["build_evaluate", "build_fit", "compose", "load_config", "main", "run_evaluate", "run_fit"]

COMMANDS = ("fit", "evaluate")
OPEN_MAPPINGS = ("trainer.", "data.paths.", "data.fields.")  # keys that need no '+' to be added
RUN_DIR_ENV = "NSR_LIGHTNING_RUN_DIR"  # shared with Lightning's child processes


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    from nsr_lightning.models import ASSETS

    if not OmegaConf.has_resolver("nsr_asset"):
        OmegaConf.register_new_resolver("nsr_asset", lambda name: str(ASSETS / name))
    if not OmegaConf.has_resolver("nsr_packaged"):  # a model shipped in a PyPI package (converted once)
        from nsr_lightning.packaged_models import packaged_model_path

        OmegaConf.register_new_resolver("nsr_packaged", packaged_model_path)
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
        plain = [o for o in overrides if not o.startswith((*OPEN_MAPPINGS, "+"))]
        listed = hydra_compose(config_name=command, overrides=plain)
        # Any lightning.Trainer argument may be set as trainer.<name>=value, listed in the YAML or not
        # (an unknown name is then refused by Trainer itself, with its own message); the same for the
        # per-data-set maps data.paths.<name> and data.fields.<name>. And +key=value for a key the
        # config has is taken as key=value (Hydra would refuse to add it twice).
        overrides = [_add_unlisted_key(o, listed) for o in overrides]
        cfg = hydra_compose(config_name=command, overrides=overrides)
    # Lightning's child processes (LOCAL_RANK set) reuse the parent's folder; a fresh run gets its own.
    inherited = os.environ.get(RUN_DIR_ENV) if "LOCAL_RANK" in os.environ else None
    if cfg.get("ckpt_path") == "last" and not (cfg.get("run_dir") or inherited):
        from nsr_lightning.errors import UserError

        raise UserError(
            "ckpt_path=last needs run_dir=<the run's folder>: without one every run starts in a new "
            "runs/<time> folder, where there is nothing to resume"
        )
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

    from nsr_lightning.config_check import check_config, check_overrides
    from nsr_lightning.errors import UserError

    check_overrides(command, overrides)
    try:
        cfg = compose(command, overrides)
    except (HydraException, OmegaConfBaseException, ValueError, TypeError) as e:
        raise UserError(_mistyped_key(command, overrides, e) or _hydra_line(e) or _one_message(e)) from None
    check_config(cfg)
    return cfg


def _hydra_line(e: BaseException) -> str | None:
    """Hydra's multi-line messages as one line: an unknown option (its list of options joined),
    an override its grammar cannot read (with how to quote it)."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(e).split("Config search path:")[0]
    if isinstance(e, OverrideParseException):
        key, _, value = e.override.partition("=")
        if key.startswith("-"):
            return f"{e.override}: overrides are key=value, without dashes: {e.override.lstrip('-')}"
        if "=" not in e.override:  # `algo.lr= 1e-4`: the shell split it at the space
            return f"{e.override}: not key=value; write each override as key=value with no space around '='"
        why = e.message.splitlines()[0]
        return (
            f"{e.override}: cannot be read as an override ({why}); write key=value, with a value that holds "
            f"braces, spaces or quotes in quotes: '{key}=\"{value}\"'"
        )
    if text.startswith("Ambiguous value for argument"):  # a comma: a list or a sweep?
        override = text.split("'")[1]
        key, _, value = override.partition("=")
        return f"{override}: a comma makes a sweep; for a list write {key}=[{value}], for text '{key}=\"{value}\"'"
    if isinstance(e, MissingConfigException) and "Available options in '" in text:
        first, _, options = text.partition("Available options in '")
        group, _, names = options.partition("':")
        missing = first.split("Could not find '")[-1].split("'")[0]  # objective/foo
        return f"{group}={missing.split('/')[-1]}: no such option; choose one of: {', '.join(names.split())}"
    return None


def _mistyped_key(command: str, overrides: list[str], e: BaseException) -> str | None:
    """Hydra's "Could not override 'algo.lrr'. To append to your config use +algo.lrr=..." as one
    line naming the closest real key (adding it with '+' would only fail as an unknown key)."""
    from nsr_lightning.config_check import closest_key

    text = str(e)
    if not text.startswith("Could not override '"):
        return None
    key = text.split("'")[1]
    try:
        cfg = compose(command, [o for o in overrides if o.split("=", 1)[0].lstrip("+") != key])
    except Exception:  # another override is wrong too: Hydra's own message then
        return None
    hint = closest_key(key, cfg) or " (see the keys: python -m nsr_lightning " + command + " --cfg job)"
    return f"{key}: no such config key{hint}"


def _quote_path(override: str) -> str:
    """`model.path=runs/x/epoch=0-step=9.ckpt` as Hydra needs it: a value holding '=' quoted."""
    key, sep, value = override.partition("=")
    if sep and "=" in value and value[:1] not in "'\"[{" and "'" not in value:
        return f"{key}='{value}'"
    return override


def _add_unlisted_key(override: str, listed) -> str:
    from omegaconf import OmegaConf

    key = override.split("=", 1)[0]
    if key.startswith("+") and not key.startswith("++") and "=" in override:
        absent = object()
        found = OmegaConf.select(listed, key[1:], default=absent, throw_on_missing=False)
        return override[1:] if found is not absent else override
    for prefix in OPEN_MAPPINGS:
        if key.startswith(prefix) and "=" in override:
            mapping = OmegaConf.select(listed, prefix[:-1], default=None)
            if mapping is not None and key[len(prefix) :].split(".")[0] not in mapping:
                return "+" + override
    return override


def _one_message(e: BaseException) -> str:
    """The innermost user-facing message (Hydra wraps constructor errors, OmegaConf resolver errors)."""
    from nsr_lightning.errors import UserError

    inner = e
    while inner is not None:  # a UserError raised inside a resolver (model=smollm2_135m) is the message
        if isinstance(inner, UserError):
            return str(inner)
        inner = inner.__cause__ or inner.__context__
    while e.__cause__ is not None and isinstance(e.__cause__, (ValueError, TypeError, UserError)):
        e = e.__cause__
    lines = [line.strip() for line in str(e).split("Config search path:")[0].splitlines() if line.strip()]
    return "; ".join(lines)  # one line (OmegaConf adds "full_key: ..." lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from nsr_lightning.quiet import silence_known_noise

    silence_known_noise()  # the Lightning tip and known deprecation warnings, by their exact messages
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(help_text(None))
        return 0 if argv else 2
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    overrides, wants_help, print_cfg = split_flags(args)
    overrides = [_expand_home(o) for o in overrides]
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from nsr_lightning.checkpoint import resolve_ckpt_path
    from nsr_lightning.errors import RunStopped, UserError, disk_full_error, is_disk_full
    from nsr_lightning.preflight import check_accelerator, check_online_logger, check_run_folders
    from nsr_lightning.run_dir import RunLock, check_not_finished, is_launcher, set_signal

    lock = None
    previous_sigterm = set_signal(signal.SIGTERM, _stop_now)  # until the run hands it to Lightning
    try:
        try:  # everything a user can get wrong fails here, before any training
            if wants_help:
                print(help_text(command, compose(command, [])))
                return 0
            cfg = load_config(command, overrides)
            if print_cfg:
                print(OmegaConf.to_yaml(cfg, resolve=True))
                return 0
            check_accelerator(cfg)
            check_run_folders(cfg, command)  # writable, room to write: before loading anything
            check_online_logger(cfg)
            if is_launcher():  # one run per run_dir; Lightning's child ranks run under the parent's lock
                lock = RunLock(cfg.run_dir)
                lock.acquire()
                if command == "fit":
                    check_not_finished(cfg)
            if command == "fit":
                resolve_ckpt_path(cfg.get("ckpt_path"), cfg.run_dir, report=None)  # a missing one fails now
            built = build_evaluate(cfg) if command == "evaluate" else build_fit(cfg)
        except (ValueError, TypeError, HydraException, OmegaConfBaseException) as e:
            raise UserError(_one_message(e)) from None
        if command == "evaluate":
            return run_evaluate(cfg, built, overrides)
        return run_fit(cfg, *built, overrides)
    except UserError as e:  # also found while running: a checkpoint refused, a resume with other settings
        print(f"error: {_one_message(e)}", file=sys.stderr, flush=True)
        return 2
    except RunStopped as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except BrokenPipeError:  # stdout piped into a command that ended (`| head`): nowhere to print
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        print(
            "error: the output pipe closed (`| head`?), so the run stopped; send the output to a file "
            "(`> log.txt 2>&1`) or through `| tee log.txt`",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except OSError as e:  # a full disk under a write that is not ours (the CSV logger, ...)
        if not is_disk_full(e):
            raise
        print(f"error: {disk_full_error(e.filename or '.', e)}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM before the run started: nothing to resume
        signum = e.args[0] if e.args and isinstance(e.args[0], int) else signal.SIGINT
        print(f"\n{signal.Signals(signum).name} before the run started", file=sys.stderr, flush=True)
        return 128 + signum
    finally:
        if previous_sigterm is not None:
            set_signal(signal.SIGTERM, previous_sigterm)
        if lock is not None:
            lock.release()


def _stop_now(signum, frame) -> None:
    raise KeyboardInterrupt(signum)


def _expand_home(override: str) -> str:
    """`run_dir=~/x` as the shell would have it (Hydra's parser refuses a bare `~`)."""
    key, sep, value = override.partition("=")
    if sep and (value == "~" or value.startswith("~/")):
        return f"{key}={os.path.expanduser(value)}"
    return override
