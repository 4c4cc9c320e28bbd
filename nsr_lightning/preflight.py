"""Checks that run before anything expensive (models, data, processes): config values and every
folder the run writes to (writable, room to write). Each failure is one UserError naming the key
to fix and what it accepts."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

from nsr_lightning.errors import UserError

MB = 1 << 20
LOG_MARGIN_MB = 64  # metrics, configs, pass@k files
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt")


def check_writable(key: str, folder: str | os.PathLike) -> None:
    """Create `folder` if needed and write, fsync and delete a probe file in it."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-") as f:
            f.write(b"probe")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise UserError(f"{key}: cannot write to {path}: {e.strerror or e}; choose another folder") from None


def weights_bytes(model_path: str) -> int:
    """Size of the weight files of a local model folder (0 for a hub id: unknown here)."""
    path = Path(os.path.expanduser(str(model_path)))
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for pattern in WEIGHT_FILES for f in path.glob(pattern))


def needed_bytes(cfg) -> int:
    """About what a fit run writes: the final model, plus `checkpoint.keep` checkpoints of the
    weights and AdamW's two moments (twice that with a critic), plus the logs."""
    weights = weights_bytes(cfg.model.path)
    per_checkpoint = 3 * weights * (2 if cfg.objective.get("critic_lr") is not None else 1)
    keep = cfg.checkpoint.keep if cfg.trainer.get("enable_checkpointing", True) else 0
    return weights + keep * per_checkpoint + LOG_MARGIN_MB * MB


def check_run_folders(cfg, command: str) -> None:
    """run_dir and every logger's save_dir: writable; run_dir: enough free space (fit)."""
    check_writable("run_dir", cfg.run_dir)
    for name, logger in (cfg.get("logger") or {}).items():
        save_dir = logger.get("save_dir") if hasattr(logger, "get") else None
        if save_dir:
            check_writable(f"logger.{name}.save_dir", save_dir)
    if command != "fit":
        return
    need, free = needed_bytes(cfg), shutil.disk_usage(cfg.run_dir).free
    if free < need:
        raise UserError(
            f"run_dir: {cfg.run_dir} has {free // MB} MB free, this run writes about {need // MB} MB "
            f"(final model + checkpoint.keep={cfg.checkpoint.keep} checkpoints with optimizer state + logs); "
            "free some space, choose another run_dir, or lower checkpoint.keep"
        )


def check_online_logger(cfg, timeout: float = 5.0) -> None:
    """`logger.wandb.offline=false`: an API key and a reachable W&B server, checked in seconds
    (else wandb.init fails deep in Lightning after a long wait)."""
    import netrc
    import socket
    from urllib.parse import urlparse

    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb is None or wandb.get("offline", True) or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host, port = url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)
    offline = "or set logger.wandb.offline=true (upload later: wandb sync <run_dir>/wandb/offline-run-*)"
    key = os.environ.get("WANDB_API_KEY")
    if not key:
        try:
            key = (netrc.netrc().authenticators(host) or (None, None, None))[2]
        except (OSError, netrc.NetrcParseError):
            key = None
    if not key:
        raise UserError(
            f"logger.wandb.offline=false: no W&B API key (set WANDB_API_KEY or run `wandb login`), {offline}"
        )
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise UserError(
            f"logger.wandb.offline=false: cannot reach the W&B server {host}:{port} ({e.strerror or e}); "
            f"check the network, {offline}"
        ) from None


# ---- config values, checked right after composing (before any model, data or process) -------
def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# key, accepted (said in the message), test; a key absent from the config is not checked
RULES = [
    ("seed", "an integer >= 0", lambda v: _int(v) and v >= 0),
    ("algo.lr", "a number > 0", lambda v: _number(v) and v > 0),
    ("algo.weight_decay", "a number >= 0", lambda v: _number(v) and v >= 0),
    (
        "algo.betas",
        "two numbers in [0, 1)",
        lambda v: len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v),
    ),
    ("algo.mini_batch_size", "an integer >= 0 (0 = the whole batch)", lambda v: _int(v) and v >= 0),
    ("algo.micro_batch_size", "an integer >= 0 (0 = the whole mini-batch)", lambda v: _int(v) and v >= 0),
    ("algo.ppo_epochs", "an integer >= 1", lambda v: _int(v) and v >= 1),
    ("algo.max_grad_norm", "a number > 0", lambda v: _number(v) and v > 0),
    ("algo.max_bad_updates_in_a_row", "an integer >= 1", lambda v: _int(v) and v >= 1),
    ("algo.logprob_chunk_size", "an integer >= 1", lambda v: _int(v) and v >= 1),
    ("algo.logprob_check_rows", "an integer >= 0 (0 = off)", lambda v: _int(v) and v >= 0),
    ("data.batch_size", "an integer >= 1", lambda v: _int(v) and v >= 1),
    ("data.num_train_problems", "an integer >= data.batch_size", lambda v: _int(v) and v >= 1),
    ("data.num_heldout_problems", "an integer >= 0", lambda v: _int(v) and v >= 0),
    ("data.min_terms", "an integer >= 2", lambda v: _int(v) and v >= 2),
    ("data.max_terms", "an integer >= data.min_terms", lambda v: _int(v) and v >= 2),
    ("data.max_value", "an integer >= 1", lambda v: _int(v) and v >= 1),
    ("rollout.n", "an integer >= 1", lambda v: _int(v) and v >= 1),
    ("rollout.sampling.temperature", "a number >= 0 (0 = greedy)", lambda v: _number(v) and v >= 0),
    ("rollout.sampling.top_p", "a number in (0, 1]", lambda v: _number(v) and 0 < v <= 1),
    ("rollout.sampling.top_k", "an integer >= 0 (0 = off)", lambda v: _int(v) and v >= 0),
    ("rollout.sampling.max_new_tokens", "an integer >= 1", lambda v: _int(v) and v >= 1),
    ("checkpoint.every_n_steps", "an integer >= 0 (0 = only at the end)", lambda v: _int(v) and v >= 0),
    ("checkpoint.keep", "an integer >= 1", lambda v: _int(v) and v >= 1),
    ("checkpoint.weights_only", "true or false", lambda v: isinstance(v, bool)),
    ("trainer.max_steps", "an integer >= 1, or -1 (no limit)", lambda v: _int(v) and (v >= 1 or v == -1)),
    ("callbacks.pass_at_k.n", "an integer >= 1", lambda v: _int(v) and v >= 1),
    ("callbacks.pass_at_k.every_n_steps", "an integer >= 0 (0 = off)", lambda v: _int(v) and v >= 0),
]
_ABSENT = object()


def _select(cfg, key: str):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.select(cfg, key, default=_ABSENT)
    except OmegaConfBaseException as e:  # an interpolation that does not resolve, ...
        raise UserError(f"{key}: {str(e).splitlines()[0]}") from None


def check_config(cfg) -> None:
    """Every value in RULES, the mini-batch against the batch, and the objective (pure, cheap to
    build): one UserError naming the key and the accepted values, before anything is loaded."""
    from hydra.utils import instantiate
    from omegaconf import ListConfig

    for key, accepted, ok in RULES:
        value = _select(cfg, key)
        if value is _ABSENT:
            continue
        try:
            good = ok(list(value) if isinstance(value, ListConfig) else value)
        except TypeError:  # len() of a number, ...
            good = False
        if not good:
            raise UserError(f"{key} must be {accepted}; got {value!r}")
    data = cfg.data
    if "min_terms" in data and data.max_terms < data.min_terms:
        raise UserError(
            f"data.max_terms must be an integer >= data.min_terms ({data.min_terms}); got {data.max_terms}"
        )
    if "num_train_problems" in data and data.num_train_problems < data.batch_size:
        raise UserError(
            f"data.num_train_problems must be an integer >= data.batch_size ({data.batch_size}); "
            f"got {data.num_train_problems}"
        )
    samples = cfg.data.batch_size * cfg.rollout.n
    if cfg.algo.mini_batch_size > samples:
        raise UserError(
            f"algo.mini_batch_size ({cfg.algo.mini_batch_size}) is larger than the batch: data.batch_size x "
            f"rollout.n = {samples} samples per rank; accepted: 0 (the whole batch) to {samples}"
        )
    from hydra.errors import HydraException

    try:
        instantiate(cfg.objective)
    except (ValueError, TypeError, ImportError, HydraException) as e:  # its own checks, Hydra's wrapping
        raise UserError(_innermost(e)) from None


def _innermost(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    return str(e).split("Config search path:")[0].strip()
