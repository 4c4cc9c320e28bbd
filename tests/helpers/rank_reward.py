"""A reward for multi-process tests: every response is correct on rank 0, wrong elsewhere, so
PSR has samples on rank 0 and none on the other ranks."""

import os


class RankReward:
    def __call__(self, responses: list[str], golds: list[str]) -> list[float]:
        value = 1.0 if os.environ.get("LOCAL_RANK", "0") == "0" else 0.0
        return [value] * len(responses)
