"""Prompt templates: how a problem becomes the token ids the policy sees."""

from __future__ import annotations

from nsr_lightning.errors import UserError

TEMPLATES = ("chat",)


def build_prompt(tokenizer, question: str, template: str = "chat") -> list[int]:
    """Token ids of the prompt for `question`, ending where the model's answer starts.

    chat: the model's own chat template, one user turn, generation prompt appended.
    """
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("data.template=chat but the tokenizer has no chat template")
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers >= 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)
    raise UserError(f"data.template must be one of {', '.join(TEMPLATES)}; got {template!r}")
