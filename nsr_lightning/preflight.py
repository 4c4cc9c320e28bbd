"""Checks that run before anything expensive (models, data, processes): every folder the run
writes to (writable, room to write) and, for W&B online, an API key and a reachable server.
Each failure is one UserError naming the key to fix.
Config values are checked by nsr_lightning/config_rules.py."""

from __future__ import annotations

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
    weights and AdamW's two moments, for the policy and each model the objective trains beside
    it (about as large: a critic), plus the logs."""
    from hydra.utils import instantiate

    weights = weights_bytes(cfg.model.path)
    trained = 1 + len(instantiate(cfg.objective).extra_models())
    per_checkpoint = 3 * weights * trained
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
