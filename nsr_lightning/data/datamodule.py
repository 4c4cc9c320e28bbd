"""The LightningDataModule: batches of prompts (ids, problem text, gold answer) for each RL step."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from nsr_lightning.config_rules import check_group
from nsr_lightning.data.math_datasets import load_problems
from nsr_lightning.data.synthetic import Problem, SyntheticTask
from nsr_lightning.data.templates import build_prompt
from nsr_lightning.streams import Stream, stream_seed


class ProblemDataset(Dataset):
    """Map-style view of a task's training problems, tokenised on access."""

    def __init__(self, task: SyntheticTask, size: int, tokenizer, template: str) -> None:
        self.task, self.size, self.tokenizer, self.template = task, size, tokenizer, template

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        problem = self.task.train_problem(index)
        return encode(problem, self.tokenizer, self.template)


def encode(problem: Problem, tokenizer, template: str) -> dict:
    return {
        "id": problem.id,
        "problem": problem.question,
        "answer": problem.answer,
        "prompt_ids": build_prompt(tokenizer, problem.question, template),
    }


class StepSampler(DistributedSampler):
    """Training order as a function of (seed, RL step): exact resume from any step.

    Epoch e is a permutation of the training set seeded with (seed, e), cut into
    `batch_size x ranks` slices, one per step; rank r takes the r-th `batch_size` rows of each
    slice (the tail that does not fill a step is dropped). Each time the loader is iterated it
    starts at the step `position()` says (the trainer's `global_step`: one RL step consumes one
    batch), so a run resumed from a checkpoint taken after step s sees batch s + 1 next, as an
    uninterrupted run does; no sampler state needs saving. A DistributedSampler subclass, so
    Lightning uses it as is under DDP / FSDP (it does not wrap or replace it).
    """

    def __init__(
        self, size: int, batch_size: int, *, seed: int, rank: int, world: int, position: Callable[[], int]
    ) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world, self.position = rank, world, position
        # DistributedSampler's own attributes, for code that reads them
        self.num_replicas, self.shuffle, self.drop_last, self.epoch = world, True, True, 0
        self.steps_per_epoch = size // (batch_size * world)
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"data.batch_size ({batch_size}) x {world} ranks is larger than the {size} training problems"
            )

    def __len__(self) -> int:  # rows per epoch on this rank
        return self.steps_per_epoch * self.batch_size

    def set_epoch(self, epoch: int) -> None:  # the epoch follows from the step
        pass

    def __iter__(self) -> Iterator[int]:
        step = self.position()
        epoch, first = divmod(step, self.steps_per_epoch)
        gen = torch.Generator().manual_seed(stream_seed(self.seed, Stream.TRAIN_ORDER, 0, epoch))
        order = torch.randperm(self.size, generator=gen)
        bs, per_step = self.batch_size, self.batch_size * self.world
        for s in range(first, self.steps_per_epoch):
            yield from order[s * per_step + self.rank * bs : s * per_step + (self.rank + 1) * bs].tolist()


class StepLoader(DataLoader):
    """A DataLoader Lightning treats as resumable (it has state_dict / load_state_dict); the
    position lives in the trainer's restored step (StepSampler), so the state is informative."""

    def state_dict(self) -> dict:
        return {"step": self.sampler.position()}

    def load_state_dict(self, state: dict) -> None:
        pass


def train_loader(dataset: Dataset, batch_size: int, num_workers: int, trainer, seed: int) -> DataLoader:
    """Batches of prompts in StepSampler's order (every step full)."""
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    sampler = StepSampler(
        len(dataset),
        batch_size,
        seed=seed,
        rank=rank,
        world=world,
        position=lambda: trainer.global_step if trainer is not None else 0,
    )
    return StepLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate,
        num_workers=num_workers,
    )


def collate(rows: list[dict]) -> dict:
    """Lists, not tensors: prompts have different lengths; engines pad them."""
    return {key: [row[key] for row in rows] for key in rows[0]}


class ProblemDataModule(L.LightningDataModule):
    """What the data modules share: prompts from one template, training batches in StepSampler's
    order, held-out problems encoded like training rows. A subclass provides `train_dataset()`
    and `heldout_problem_sets()`."""

    def __init__(self, tokenizer, *, batch_size: int, template: str, seed: int, num_workers: int) -> None:
        super().__init__()
        self.tokenizer, self.batch_size, self.template = tokenizer, batch_size, template
        self.num_workers, self.seed = num_workers, seed
        build_prompt(tokenizer, "1+1", template)  # fail now, not mid-run, on a bad template

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def heldout_problem_sets(self) -> dict[str, list[Problem]]:
        """Held-out problems per data set name."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.train_dataset(), self.batch_size, self.num_workers, self.trainer, self.seed)

    def prompt_rows(self, sample: int = 1000) -> dict[str, list[dict]]:
        """Encoded rows whose prompt lengths a run checks before it starts (preflight.py): every
        training problem of a list (the first `sample` of a generated task: their lengths come
        from the same few templates) and every held-out problem."""
        train = self.train_dataset()
        count = len(train) if isinstance(train, ListDataset) else min(len(train), sample)
        return {"training": [train[i] for i in range(count)], **self.heldout()}

    def heldout(self) -> dict[str, list[dict]]:
        """Held-out problems per data set name, encoded like training rows."""
        return {
            name: [encode(p, self.tokenizer, self.template) for p in problems]
            for name, problems in self.heldout_problem_sets().items()
        }


class SyntheticDataModule(ProblemDataModule):
    """The embedded signed-sum task (nsr_lightning.data.synthetic) with a held-out split."""

    def __init__(
        self,
        tokenizer,
        *,
        batch_size: int = 16,
        num_train_problems: int = 100_000,
        num_heldout_problems: int = 128,
        template: str = "chat",
        min_terms: int = 3,
        max_terms: int = 5,
        max_value: int = 20,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        check_group("data", locals())
        # the task checks its arguments before the base checks the template
        task = SyntheticTask(min_terms=min_terms, max_terms=max_terms, max_value=max_value, seed=seed)
        super().__init__(
            tokenizer, batch_size=batch_size, template=template, seed=seed, num_workers=num_workers
        )
        self.num_train_problems = num_train_problems
        self.num_heldout_problems = num_heldout_problems
        self.task = task

    def train_dataset(self) -> Dataset:
        return ProblemDataset(self.task, self.num_train_problems, self.tokenizer, self.template)

    def heldout_problem_sets(self) -> dict[str, list[Problem]]:
        return {"synthetic": self.task.heldout_problems(self.num_heldout_problems)}


class ListDataset(Dataset):
    """Map-style view of a list of problems, tokenised on access."""

    def __init__(self, problems: list[Problem], tokenizer, template: str) -> None:
        self.problems, self.tokenizer, self.template = problems, tokenizer, template

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, index: int) -> dict:
        return encode(self.problems[index], self.tokenizer, self.template)


class MathDataModule(ProblemDataModule):
    """Named math data sets (nsr_lightning.data.math_datasets): one to train on, others held out.

    ``paths`` / ``fields`` map a set's name to a local file / a column mapping; a set without a
    path loads from the hub (online only). Batches have the synthetic module's shape.
    """

    def __init__(
        self,
        tokenizer,
        *,
        train: str = "math_train",
        heldout: list[str] | tuple[str, ...] = ("math500",),
        paths: dict | None = None,
        fields: dict | None = None,
        batch_size: int = 32,
        max_heldout_problems: int | None = None,
        template: str = "qwen25_math",
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        check_group("data", locals())
        super().__init__(
            tokenizer, batch_size=batch_size, template=template, seed=seed, num_workers=num_workers
        )
        paths, fields = dict(paths or {}), dict(fields or {})

        def load(name: str, limit: int | None = None) -> list[Problem]:
            return load_problems(name, path=paths.get(name), fields=fields.get(name), limit=limit, seed=seed)

        self.train_problems = load(train)
        if len(self.train_problems) < batch_size:
            raise ValueError(
                f"data.batch_size ({batch_size}) is larger than the {len(self.train_problems)} problems of {train}"
            )
        self.heldout_problems = {name: load(name, max_heldout_problems) for name in heldout}

    def train_dataset(self) -> Dataset:
        return ListDataset(self.train_problems, self.tokenizer, self.template)

    def heldout_problem_sets(self) -> dict[str, list[Problem]]:
        return self.heldout_problems
