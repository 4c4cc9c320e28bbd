"""The token ids a response stops at: one rule for every engine and for the truncation count.

A response ends at the first of
- the tokenizer's eos token,
- the generation config's eos ids (`generation_config.json` beside the tokenizer: instruct
  models often list their end-of-turn token there),
- the chat template's end-of-turn token: the special token the template writes right after an
  assistant message's content (`<|im_end|>` for Qwen / SmolLM2, `<|eot_id|>` for Llama 3).

Qwen2.5 base checkpoints name `<|endoftext|>` as eos while their chat turns end with `<|im_end|>`:
stopping on eos alone lets a finished answer run on to max_new_tokens.
"""

from __future__ import annotations

_MARK = "NSRLIGHTNINGMARK"  # an assistant message's content, to find what the template writes after it


def stop_token_ids(tokenizer) -> list[int]:
    """The union of the three kinds of stop tokens above, sorted (at least the eos)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs an EOS token")
    ids = {int(tokenizer.eos_token_id)}
    ids |= generation_eos_ids(getattr(tokenizer, "name_or_path", "") or "")
    turn = end_of_turn_id(tokenizer)
    if turn is not None:
        ids.add(turn)
    return sorted(ids)


def generation_eos_ids(source: str) -> frozenset[int]:
    """eos_token_id of the generation config at `source` (a model folder or a cached hub id);
    empty when there is none. Never downloads."""
    if not source:
        return frozenset()
    from transformers import GenerationConfig
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        config = GenerationConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, TypeError):
        return frozenset()
    finally:
        hf_logging.set_verbosity(verbosity)
    eos = config.eos_token_id
    if eos is None:
        return frozenset()
    return frozenset(int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos]))


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template writes right after an assistant message (None: no
    chat template, or what follows the message is not one special token)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": _MARK}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that refuses this conversation (jinja raises its own errors)
        return None
    if not isinstance(text, str) or _MARK not in text:
        return None
    after = text[text.rindex(_MARK) + len(_MARK) :]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    if not ids:
        return None
    first = int(ids[0])
    special = set(tokenizer.all_special_ids)
    special |= {int(i) for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special}
    return first if first in special else None
