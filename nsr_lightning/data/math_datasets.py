"""Math data sets by name: MATH train / test / MATH-500, AIME 2025, AMC23, and the synthetic task.

Every set loads from a local file (``path``: JSONL, JSON or Parquet) or, when no path is given
and the machine is online, from the Hugging Face hub (needs the optional ``datasets`` package).
A local row is an object with (names changeable with ``fields``):

    problem  str               the question shown to the model              (required)
    answer   str | int | float the gold answer; a full solution also works:
                               its last \\boxed{...} is taken                (required)
    id       str | int        a unique problem id                          (default <name>-<row>)

``fields`` maps these three names to the file's own column names, e.g.
``{"problem": "question", "answer": "solution"}``, over the named set's hub defaults (``DATASETS``). Errors name the file and the row.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from nsr_lightning.config_rules import check
from nsr_lightning.data.synthetic import Problem, SyntheticTask
from nsr_lightning.errors import UserError
from nsr_lightning.rewards.extract import gold_answer

__all__ = ["DATASETS", "DatasetSpec", "load_problems", "read_rows", "to_problems"]


@dataclass(frozen=True)
class DatasetSpec:
    """Where a named set lives on the hub and how its columns map onto the schema."""

    hub_id: str
    split: str
    size: int
    fields: dict = field(default_factory=dict)
    config: str | None = None


_MATH = {"problem": "problem", "answer": "solution"}  # the answer is the solution's last box
DATASETS: dict[str, DatasetSpec] = {
    "math_train": DatasetSpec("DigitalLearningGmbH/MATH-lighteval", "train", 7500, _MATH),
    "math_test": DatasetSpec("DigitalLearningGmbH/MATH-lighteval", "test", 5000, _MATH),
    "math500": DatasetSpec("HuggingFaceH4/MATH-500", "test", 500, {"id": "unique_id"}),
    "aime25": DatasetSpec("math-ai/aime25", "test", 30),
    "amc23": DatasetSpec("math-ai/amc23", "test", 40, {"problem": "question"}),
}
SYNTHETIC = "synthetic"  # the embedded task's held-out problems (nsr_lightning.data.synthetic)
WORD_PROBLEMS = "word_problems"  # held-out arithmetic word problems (nsr_lightning.data.word_problems)
NAMES = (*DATASETS, SYNTHETIC, WORD_PROBLEMS)
_SCHEMA = ("problem", "answer", "id")
MAX_FIELD_CHARS = 100_000  # a problem or answer longer than this is a broken row, not a prompt


def load_problems(
    name: str,
    *,
    path: str | None = None,
    fields: dict | None = None,
    hub_id: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[Problem]:
    """The problems of data set ``name`` (first ``limit`` only when given)."""
    check("data.limit", limit)
    if name == SYNTHETIC and path is None:
        return SyntheticTask(seed=seed).heldout_problems(limit or 128)
    if name == WORD_PROBLEMS and path is None:
        from nsr_lightning.data.word_problems import WordProblemTask  # imports this module's package

        return WordProblemTask(seed=seed).heldout_problems(limit or 128)
    spec = DATASETS.get(name)
    if spec is None and path is None and hub_id is None:
        raise UserError(
            f"unknown data set {name!r}; choose one of: {', '.join(NAMES)} (or give it a path to a local file)"
        )
    mapping = {k: k for k in _SCHEMA} | dict(spec.fields if spec else {}) | dict(fields or {})
    unknown = set(mapping) - set(_SCHEMA)
    if unknown:
        raise UserError(f"data set {name}: fields may only map {', '.join(_SCHEMA)}; got {sorted(unknown)}")
    if path is not None:
        rows, where = read_rows(path), str(path)
    else:
        hub_id, split = hub_id or spec.hub_id, split or spec.split
        rows, where = _hub_rows(name, hub_id, split, spec.config if spec else None), f"{hub_id} ({split})"
    return to_problems(rows[:limit] if limit else rows, mapping, name=name, where=where)


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a local JSONL / JSON / Parquet file, with errors that name the file and the row."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise UserError(f"{p}: no such file (a data set path must be a JSONL, JSON or Parquet file)")
    if p.suffix == ".parquet" or _starts_with(p, b"PAR1"):  # a Parquet file by its name or content
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{p}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        try:
            rows = pq.read_table(p).to_pylist()
        except Exception as e:
            raise UserError(f"{p}: not a readable Parquet file ({str(e).splitlines()[0][:200]})") from None
    else:
        try:
            data = p.read_bytes()
        except OSError as e:
            raise UserError(f"{p}: cannot read the file ({e.strerror})") from None
        rows = _json_rows(p, data)
    if not rows:
        raise UserError(f"{p}: the file has no rows")
    return rows


def _starts_with(p: Path, magic: bytes) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _no_constant(name: str):
    """NaN, Infinity, -Infinity: not JSON numbers (Python's json reads them unless told not to)."""
    raise ValueError(f"{name} is not a JSON number")


def _json_rows(p: Path, data: bytes) -> list[dict]:
    if p.suffix == ".json":
        try:
            rows = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
        except UnicodeDecodeError as e:
            raise UserError(f"{p}: not valid UTF-8 at byte {e.start}") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None
        except (ValueError, RecursionError) as e:  # a 5,000-digit number, nesting thousands deep
            raise UserError(f"{p}: not readable JSON ({str(e)[:120] or type(e).__name__})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise UserError(f"{p}: a .json data file must hold a list of objects")
        return rows
    rows = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"), parse_constant=_no_constant)
        except UnicodeDecodeError:
            raise UserError(f"{p}: line {number}: not valid UTF-8") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: line {number}: not valid JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # a 5,000-digit number, nesting thousands deep
            raise UserError(
                f"{p}: line {number}: not readable JSON ({str(e)[:120] or type(e).__name__})"
            ) from None
        if not isinstance(row, dict):
            raise UserError(f"{p}: line {number}: expected a JSON object, got {type(row).__name__}")
        row["__line__"] = number
        rows.append(row)
    return rows


def _hub_rows(name: str, hub_id: str, split: str, config: str | None) -> list[dict]:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise UserError(
            f"data set {name}: no local path given and the hub is off (HF_HUB_OFFLINE is set); "
            f"download {hub_id} ({split}) to a JSONL or Parquet file and set its path"
        )
    try:
        import datasets
    except ImportError:
        raise UserError(
            f"data set {name}: loading {hub_id} from the hub needs the `datasets` package "
            "(pip install -e '.[hub]' in the clone), or give a local file as its path"
        ) from None
    try:
        return list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as e:
        raise UserError(
            f"data set {name}: cannot load {hub_id} ({split}) from the hub: {str(e)[:300]}"
        ) from None


def to_problems(rows: list[dict], mapping: dict, *, name: str, where: str) -> list[Problem]:
    """Validated problems from raw rows; ``mapping`` maps schema names to column names."""
    problems, seen = [], set()
    for index, row in enumerate(rows):
        at = f"{where}: {'line ' + str(row['__line__']) if '__line__' in row else 'row ' + str(index)}"
        question = _field(row, mapping, "problem", at, name)
        if not isinstance(question, str) or not question.strip():
            raise UserError(f"{at}: '{mapping['problem']}' must be a non-empty string; got {question!r:.80}")
        for key, value in (("problem", question), ("answer", row.get(mapping["answer"]))):
            if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                raise UserError(
                    f"{at}: '{mapping[key]}' is {len(value):,} characters long; at most {MAX_FIELD_CHARS:,}"
                )
        answer = _field(row, mapping, "answer", at, name)
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
            raise UserError(
                f"{at}: '{mapping['answer']}' must be a non-empty string or number; got {answer!r:.80}"
            )
        answer = gold_answer(str(answer))  # a solution with boxes: all of them, as one answer
        if not answer:
            raise UserError(
                f"{at}: '{mapping['answer']}' has a \\boxed{{}} without a closed, non-empty answer"
            )
        pid = row.get(mapping["id"], f"{name}-{index}")
        if isinstance(pid, bool) or not isinstance(pid, (str, int)):
            raise UserError(f"{at}: '{mapping['id']}' must be a string or an integer; got {pid!r:.80}")
        pid = str(pid)
        if pid in seen:
            raise UserError(f"{at}: duplicate problem id {pid!r}")
        seen.add(pid)
        problems.append(Problem(id=pid, question=question, answer=answer))
    return problems


def _field(row: dict, mapping: dict, key: str, at: str, name: str):
    column = mapping[key]
    if column not in row:
        columns = ", ".join(sorted(str(c) for c in row if c != "__line__"))[:300]
        raise UserError(
            f"{at}: no '{column}' field for the {key} (columns: {columns}); map it with data.fields.{name}.{key}=<column>"
        )
    return row[column]
