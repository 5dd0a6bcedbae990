r"""Real datasets as tasks: rows of a hub dataset or a local file, normalised to :class:`Problem`.

One loader, :func:`load` (registered as ``task.loader=dataset``), serves every preset under
``conf/task/``; a preset only names where the rows are and which fields hold what:

- where: ``task.path``, a local .jsonl/.json/.parquet file (read for every split) or a folder of
  them named after the splits (``<path>/test.jsonl``), wins over ``task.dataset``, a hub id loaded with ``datasets.load_dataset(dataset, subset,
  split=...)``. ``task.train_split`` / ``task.test_split`` name the dataset's splits; null = none.
- what: ``task.prompt_field`` (the question, then put through ``task.template``), ``task.answer_field``
  (the gold answer, read by ``task.answer_extract``), ``task.id_field`` (null = the row index), and
  ``task.columns``, the fields the verifier needs, carried in ``Problem.metadata`` and passed to the
  reward function by name (``task.column_fields`` maps a column to a differently named field,
  ``task.column_decoders`` names a decoder from :data:`DECODERS` for a column stored encoded).

Field names may be dotted paths into nested rows, with integers for list items: ``prompt.0.content``.
Every error says what to set: a missing field lists the fields the rows have.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import pickle
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from algorithms.registry import Registry
from train.errors import DataError
from train.tasks import Problem
from train.tasks.templates import TEMPLATES

if TYPE_CHECKING:
    from train.config import TaskConfig

logger = logging.getLogger(__name__)

# datasets.load_dataset's packaged builder for each local file type
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}

AnswerExtractor = Callable[[str], str]
EXTRACTORS: Registry[AnswerExtractor] = Registry("answer extraction")


@EXTRACTORS.register("none")
def as_is(answer: str) -> str:
    """The answer field as it is, stripped."""
    return answer.strip()


@EXTRACTORS.register("gsm8k")
def after_hashes(answer: str) -> str:
    """GSM8K's final answer: what follows the last ``#### `` of the worked solution.

    >>> after_hashes("3 + 4 = <<3+4=7>>7\\n#### 7")
    '7'
    """
    head, hashes, tail = answer.rpartition("####")
    if not hashes:
        raise DataError(f"answer has no '####' (task.answer_extract=gsm8k): {answer[-80:]!r}")
    return tail.strip()


@EXTRACTORS.register("boxed")
def last_boxed(answer: str) -> str:
    r"""The content of the last ``\boxed{...}`` of a worked solution (MATH's convention).

    >>> last_boxed(r"so $\boxed{\frac{1}{2}}$.")
    '\\frac{1}{2}'
    """
    start = answer.rfind("\\boxed{")
    if start < 0:
        raise DataError(f"answer has no \\boxed{{...}} (task.answer_extract=boxed): {answer[-80:]!r}")
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin - 1, len(answer)):
        depth += {"{": 1, "}": -1}.get(answer[i], 0)
        if depth == 0:
            return answer[begin:i].strip()
    raise DataError(f"unbalanced \\boxed{{ in answer (task.answer_extract=boxed): {answer[-80:]!r}")


Decoder = Callable[[Any], Any]
DECODERS: Registry[Decoder] = Registry("column decoder")


@DECODERS.register("json")
def json_text(value: Any) -> Any:
    """JSON text as the value it encodes; anything else (already decoded by the loader) as it is."""
    return json.loads(value) if isinstance(value, str) else value


class _DataOnly(pickle.Unpickler):
    """Unpickles plain data only: a pickle that names any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused: the data names {module}.{name}; only plain values are read")


@DECODERS.register("livecodebench_tests")
def livecodebench_tests(value: Any) -> Any:
    """LiveCodeBench's ``private_test_cases``: JSON text, or base64 of zlib of a pickled JSON string
    (lcb_runner/benchmarks/code_generation.py). The pickle is read as data only, never as code.

    >>> packed = base64.b64encode(zlib.compress(pickle.dumps('[{"input": "1", "output": "2"}]'))).decode()
    >>> livecodebench_tests(packed), livecodebench_tests('[]')
    ([{'input': '1', 'output': '2'}], [])
    """
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        text = _DataOnly(io.BytesIO(zlib.decompress(base64.b64decode(value.encode())))).load()
        return json.loads(text)


@DECODERS.register("livecodebench_fn_name")
def livecodebench_fn_name(value: Any) -> Any:
    """The function a LeetCode problem calls, from LiveCodeBench's ``metadata`` JSON; None for stdin problems.

    >>> livecodebench_fn_name('{"func_name": "maxSum"}'), livecodebench_fn_name("{}")
    ('maxSum', None)
    """
    return json_text(value).get("func_name")


def load(cfg: TaskConfig, split: str) -> list[Problem]:
    """The problems of ``split`` ("train" or "test") of the dataset ``cfg`` describes, in row order."""
    template, extract = TEMPLATES[cfg.template], EXTRACTORS[cfg.answer_extract]  # fail before any loading
    for column, decoder in cfg.column_decoders.items():
        DECODERS[decoder]  # an unknown name fails here, listing the known ones
        if column not in cfg.columns:
            raise DataError(f"task.column_decoders names {column!r}, which is not in task.columns {list(cfg.columns)}")
    rows, source = read_rows(cfg, split)
    problems = []
    for index, row in enumerate(rows):
        try:
            problems.append(to_problem(row, index, cfg, template, extract))
        except ValueError as err:  # say which row of which file, so it can be found and fixed
            raise DataError(f"{source}, row {index} (counting from 0): {err}") from err
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise DataError(f"task.id_field={cfg.id_field!r} is not unique in {cfg.name}'s {split} split; "
                         "name a unique field, or set task.id_field=null to number the rows")  # fmt: skip
    return problems


def read_rows(cfg: TaskConfig, split: str) -> tuple[Sequence[Mapping[str, Any]], str]:
    """The rows of the dataset's split that plays ``split`` (from ``task.path`` if set, else the hub), and
    where they came from, for messages. Raises ValueError, saying what to set, when there are none."""
    name = {"train": cfg.train_split, "test": cfg.test_split}[split]
    if name is None:
        raise DataError(f"task {cfg.name!r} has no {split} split (task.{split}_split=null); set task.{split}_split "
                         f"to one of the dataset's splits, or use another task for {split}ing")  # fmt: skip
    if cfg.path:
        file = local_file(Path(cfg.path).expanduser(), name, split)
        if file == Path(cfg.path).expanduser() and cfg.train_split and cfg.test_split:
            logger.warning("task.path=%s is one file: the train and test splits both read it", cfg.path)
        source = f"task.path: {file} (the {split} split)"
        rows = _read_local(file, source)
    elif cfg.dataset:
        source = f"task.dataset={cfg.dataset} (split {name!r}, the {split} split)"
        rows = _read_hub(cfg, name, split)
    else:
        raise DataError("task.loader=dataset needs task.dataset (a hub id) or task.path (a local file)")
    if len(rows) == 0:
        raise DataError(f"{source} holds no rows; point it at the data, or set task.{split}_split=null if the "
                         f"task has no {split} split")  # fmt: skip
    return rows, source


def _read_local(file: Path, source: str) -> Sequence[Mapping[str, Any]]:
    """A local file's rows; an empty or malformed file is a ValueError naming it (not datasets' bare
    StopIteration or "An error occurred while generating the dataset")."""
    import datasets  # late: a heavy import that only real-data tasks need
    from datasets.exceptions import DatasetGenerationError

    try:
        return datasets.load_dataset(BUILDERS[file.suffix], data_files=str(file), split="train")
    except StopIteration:  # datasets' json builder on a file of zero bytes
        raise DataError(f"{source} is empty; point task.path at the data") from None
    except DatasetGenerationError as err:
        raise DataError(f"{source} could not be read: {err.__cause__ or err}; fix or remove the malformed row") from err
    except ValueError as err:
        if "corresponds to no data" not in str(err):  # blank lines only, or an empty JSON list
            raise
        return []


def _read_hub(cfg: TaskConfig, name: str, split: str) -> Sequence[Mapping[str, Any]]:
    import datasets

    try:
        return datasets.load_dataset(cfg.dataset, cfg.subset, split=name)
    except ValueError as err:
        if "Unknown split" not in str(err):
            raise
        raise DataError(f"task.dataset={cfg.dataset}: {str(err).rstrip('.')}; set task.{split}_split to one of them, or to null "
                         f"if the task has no {split} split") from err  # fmt: skip


def local_file(path: Path, name: str, split: str) -> Path:
    """``path`` itself when a file, else the file ``<path>/<split name>.<jsonl|json|parquet>``."""
    candidates = [path / f"{name}{suffix}" for suffix in BUILDERS] if path.is_dir() else [path]
    found = next((file for file in candidates if file.is_file()), None)
    if found is None:
        raise FileNotFoundError(
            f"task.path: no file {' or '.join(map(str, candidates))} (the {split} split, {name!r}); point task.path "
            "at a local .jsonl/.json/.parquet file, or at a folder holding one per split named after the split"
        )
    if found.suffix not in BUILDERS:
        raise DataError(f"task.path={found}: unknown file type {found.suffix!r}; use one of {', '.join(BUILDERS)}")
    return found


def to_problem(
    row: Mapping[str, Any], index: int, cfg: TaskConfig, template: Callable[..., str], extract: AnswerExtractor
) -> Problem:
    """One row as a Problem: the templated question, the extracted answer, the verifier's columns."""
    columns = {name: field_of(row, cfg.column_fields.get(name, name), f"columns ({name})") for name in cfg.columns}
    for name, decoder in cfg.column_decoders.items():
        columns[name] = DECODERS[decoder](columns[name])
    text = field_of(row, cfg.prompt_field, "prompt_field")
    if not isinstance(text, str) or not text.strip():
        shown = repr(text) if isinstance(text, (str, int, float, bool, type(None))) else f"a {type(text).__name__}"
        raise DataError(
            f"task.prompt_field={cfg.prompt_field!r} is {shown[:60]}, not the text of a question; fix or remove the "
            "row, or point task.prompt_field at the field holding the question (dotted paths reach nested fields)"
        )
    answer = extract(as_text(field_of(row, cfg.answer_field, "answer_field"))) if cfg.answer_field else ""
    problem_id = str(field_of(row, cfg.id_field, "id_field")) if cfg.id_field else str(index)
    tags = {name: str(field_of(row, name, f"tag_fields ({name})")) for name in cfg.tag_fields}
    return Problem(id=problem_id, prompt=template(text, columns), answer=answer, metadata={**columns, "tags": tags} if tags else columns)


def field_of(row: Mapping[str, Any], path: str, option: str) -> Any:
    """The value at dotted ``path`` in ``row`` (integers index lists); errors name ``task.<option>``.

    >>> field_of({"prompt": [{"content": "hi"}]}, "prompt.0.content", "prompt_field")
    'hi'
    >>> field_of({"question": "q", "answer": "a"}, "problem", "prompt_field")
    Traceback (most recent call last):
    ...
    train.errors.DataError: task.prompt_field: the rows have no field 'problem'; available fields: answer, question
    """
    value: Any = row
    for part in path.split("."):
        try:
            value = value[int(part)] if isinstance(value, (list, tuple)) else value[part]
        except (KeyError, IndexError, ValueError, TypeError):
            available = ", ".join(sorted(value)) if isinstance(value, Mapping) else f"a {type(value).__name__}"
            raise DataError(f"task.{option}: the rows have no field {path!r}; available fields: {available}") from None
    return value


def as_text(value: Any) -> str:
    """A gold answer as text: one-item lists unwrapped (OlympiadBench), whole floats as integers.

    >>> as_text(["$3$"]), as_text(27.0), as_text(["1", "2"]), as_text(0.5)
    ('$3$', '27', '1, 2', '0.5')
    """
    if isinstance(value, (list, tuple)):
        return as_text(value[0]) if len(value) == 1 else ", ".join(as_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


__all__ = ["BUILDERS", "DECODERS", "EXTRACTORS", "as_text", "field_of", "load", "read_rows", "to_problem"]
