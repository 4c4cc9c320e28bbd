"""Errors a user can cause and fix; the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """A bad config value, a missing file, a malformed data row: the message says what to fix."""


class ConfigError(UserError, ValueError):
    """A value its config key does not accept (nsr_lightning/config_rules.py); a ValueError too,
    for code that builds the objects from Python."""


class RunStopped(Exception):
    """A run that stopped itself on purpose (e.g. too many non-finite updates in a row)."""


class DiskFull(RunStopped):
    """The disk filled up while the run wrote a file (a checkpoint, the final model)."""


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC / EDQUOT as an OSError, or as the messages torch.save and safetensors give it."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return "unexpected pos" in text or "No space left on device" in text or "os error 28" in text


def disk_full_error(path, e: BaseException) -> DiskFull:
    import shutil
    from pathlib import Path

    folder = Path(path).parent
    free = shutil.disk_usage(folder).free >> 20 if folder.exists() else "?"
    return DiskFull(
        f"no space left on device while writing {path} ({free} MB free now; {str(e).splitlines()[0][:120]}); "
        "free some space or choose another run_dir, then resume with ckpt_path=last"
    )
