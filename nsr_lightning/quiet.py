"""Known third-party noise, silenced at its source: each filter matches one exact message, nothing else.

Called once by the command line (`cli.main`), so `fit` and `evaluate` start with this package's own lines.
Any other warning or log line still shows.
"""

from __future__ import annotations

import logging
import warnings

# (logger name, text the record's message holds): log lines dropped from that logger only.
_LOG_LINES = (
    # Lightning's advertisement, logged by its rank-zero logger when no LitLogger is configured
    (
        "lightning.pytorch.utilities.rank_zero",
        "Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]",
    ),
    # transformers >= 5.24, on every model call with a KV cache argument
    ("transformers.utils.generic", "`past_key_values`/`cache_params` are deprecated. Use `cache` instead."),
    # a prompt longer than the tokenizer's model_max_length: preflight.check_prompt_lengths says it in
    # one line against the model's own context (this one names neither the prompt nor the fix)
    (
        "transformers.tokenization_utils_base",
        "Token indices sequence length is longer than the specified maximum sequence length",
    ),
)

# (message regex, category): matched from the start of the message, as `warnings.filterwarnings` does.
_WARNINGS = (
    # transformers >= 5.24 renames the `past_key_values` argument of its generation and mask helpers
    (r"`past_key_values` is deprecated", FutureWarning),
    # Lightning's pytree helper still builds torch's deprecated LeafSpec (torch >= 2.10)
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # Lightning, on a machine with more than 2 CPUs: fit's training loader yields prompt ids held in
    # memory (a step's time is sampling and the update), so worker processes would only add their
    # start-up and a copy of every batch; data.num_workers stays available for a slow data set
    (r"The 'train_dataloader' does not have many workers", UserWarning),
)


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in str(record.msg)


def silence_known_noise() -> None:
    """Install the filters (idempotent)."""
    for message, category in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, text in _LOG_LINES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.text == text for f in logger.filters):
            logger.addFilter(_DropMessage(text))
