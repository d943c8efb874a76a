"""Batch scoring (`invoke predict`): a CSV or Parquet file in, the API's answers out, in bounded chunks.

A chunk stays in columns from reading to writing: pyarrow reads it (a CSV's cells as text, missing markers
as null), app/predict/columns.py judges each feature's column by the rules the API's request parser is
built from and builds the compiled preprocessor's matrix from the rows that pass, the served version's
Predictor answers the matrix in one call (the estimator call and checks the API makes), and pyarrow writes
the answers. So a row gets exactly the answer the API would give it.

A row the column check flags goes, alone, to the API's request parser (as the JSON a client would send
for its cells), which decides: its 422 reason goes to the errors file beside the output with the row's
number (1 = the first data row), or, if the parser accepts it after all, it is scored from the parser's
row. A refused row does not stop the file; the other rows of its chunk are scored.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa

from app.predict.columns import Checked, check_columns, json_value, matrix, python_rows
from app.predict.parser import RequestError, RequestParser, rule_of
from app.predict.predictor import OutOfRange, Predictor
from tand.config import MISSING_MARKERS
from tand.errors import TandError
from tand.schema import FeatureSchema

CHUNK_ROWS = 20_000
PARQUET_SUFFIXES = (".parquet", ".pq")
OUT_OF_RANGE = "too far out of range for the model to compute with"


class ScoringError(TandError):
    """The file cannot be scored at all (unreadable, a column missing, nothing scorable)."""


@dataclass
class Summary:
    rows: int = 0
    scored: int = 0
    refused: int = 0
    errors_path: Path | None = None
    classes: tuple[str, ...] | None = None
    seconds: float = 0.0  # reading, scoring and writing (not loading the model)


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def errors_path_for(output: Path) -> Path:
    return output.with_name(f"{output.stem}.errors.csv")


def read_chunks(path: Path, columns: list[str], chunk_rows: int, keep: list[str] = ()) -> Iterator[pa.Table]:
    """The input's chunks of at most `chunk_rows` rows, only `columns` (the features and the `keep` ones). CSV:
    every cell as text, a missing marker (tand.config.MISSING_MARKERS) as null."""
    with _reading(path):
        batches = _parquet_batches(path, columns, chunk_rows, keep) if is_parquet(path) else _csv_batches(path, columns, keep)
        yield from _rechunked(batches, chunk_rows)


@contextmanager
def _reading(path: Path):
    try:
        yield
    except (OSError, pa.ArrowException, ValueError, csv.Error) as exc:
        kind = "Parquet" if is_parquet(path) else "CSV"
        raise ScoringError(f"{path}: cannot be read as {kind} ({str(exc).splitlines()[0][:200]})") from None


def _rechunked(batches: Iterator[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.Table]:
    """Tables of exactly `chunk_rows` rows (the last one: what is left), from batches of any size."""
    pending, count = [], 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


def _parquet_batches(path: Path, columns: list[str], chunk_rows: int, keep) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    _check_columns(path, [c for c in columns if c not in parquet.schema_arrow.names], keep)
    yield from parquet.iter_batches(batch_size=chunk_rows, columns=columns)


def _csv_batches(path: Path, columns: list[str], keep) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pacsv

    from tand.training.reading import sniff_separator

    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        first = handle.readline()
        sample = first + handle.read(1 << 20)
    separator = sniff_separator(first)
    header = next(csv.reader([first], delimiter=separator), [])
    _check_columns(path, [c for c in columns if c not in header], keep)
    # pyarrow reads ahead a few dozen blocks whatever the file's size: small blocks keep that bounded
    # (1 MB: about 40 MB held), large enough for the longest row; one thread: the core stays the scorer's.
    block = max(1 << 20, 8 * max(map(len, sample.splitlines()), default=0))
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False, block_size=block),
        parse_options=pacsv.ParseOptions(delimiter=separator),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns, column_types={c: pa.string() for c in columns},
            null_values=list(MISSING_MARKERS), strings_can_be_null=True, quoted_strings_can_be_null=True,
        ),
    )  # fmt: skip
    yield from reader


def _check_columns(path: Path, missing: list[str], keep) -> None:
    features = [c for c in missing if c not in keep]
    if features:
        raise ScoringError(f"{path}: no column {', '.join(map(repr, features))}, which the model takes as input")
    if missing:
        raise ScoringError(f"{path}: no column {', '.join(map(repr, missing))} to copy (--keep)")


def row_counts(path: Path) -> int | None:
    if is_parquet(path):
        import pyarrow.parquet as pq

        with _reading(path):
            return pq.ParquetFile(path).metadata.num_rows
    return None


@dataclass
class Scored:
    positions: np.ndarray  # of the chunk's rows that were scored, ascending
    labels: np.ndarray
    proba: np.ndarray | None
    refused: list[tuple[int, str, str]]  # (position, column, reason)


class ChunkScorer:
    """One chunk (Arrow columns) → the answers for the rows the API accepts, and the refusals."""

    def __init__(self, schema: FeatureSchema, predictor: Predictor):
        self.schema = schema
        self.predictor = predictor
        self.parser = RequestParser(schema, max_rows=1)
        self._rules = {f.name: rule_of(f) for f in schema.features}
        self._encoder = msgspec.json.Encoder()

    def score(self, batch: pa.Table) -> Scored:
        checked = check_columns({name: batch.column(name) for name in self.schema.names}, self.schema)
        flagged = np.flatnonzero(checked.bad)
        refused, rescued, rescued_rows = self._verdicts(batch, flagged)
        good = np.flatnonzero(~checked.bad)
        result = self._predict(checked.take(good) if len(flagged) else checked, good, refused)
        if rescued:
            result = _merge(result, self._predict(rescued_rows, np.array(rescued), refused))
        result.refused.sort()
        return result

    def _verdicts(self, batch: pa.Table, flagged: np.ndarray) -> tuple[list, list[int], list[tuple]]:
        """The API's parser on each flagged row: its reason, or its validated row if it accepts it."""
        refused, rescued, rows = [], [], []
        if not len(flagged):
            return refused, rescued, rows
        cells = batch.select(self.schema.names).take(pa.array(flagged)).to_pylist()
        for position, record in zip(flagged.tolist(), cells):
            body = self._encoder.encode({name: json_value(cell, self._rules[name]) for name, cell in record.items()})
            try:
                parsed, _ = self.parser.parse(body)
            except RequestError as exc:
                error = exc.errors[0]
                loc = error.get("loc", [])
                refused.append((position, str(loc[1]) if len(loc) > 1 else "", str(error.get("msg", "invalid"))))
            else:
                rescued.append(position)
                rows.append(parsed[0])
        return refused, rescued, rows

    def _predict(self, inputs, positions: np.ndarray, refused: list) -> Scored:
        """The answers for `inputs` (a Checked chunk, or the parser's rows) at `positions`; rows the model
        cannot compute with are refused and the call repeated without them."""
        while len(positions):
            try:
                return Scored(positions, *self._labels(inputs), refused)
            except OutOfRange as exc:
                keep = self._drop(exc, positions, refused)
            inputs = inputs.take(keep) if isinstance(inputs, Checked) else [inputs[i] for i in keep]
            positions = positions[keep]
        return Scored(positions, np.array([]), None, refused)

    def _labels(self, inputs) -> tuple[np.ndarray, np.ndarray | None]:
        if not isinstance(inputs, Checked):
            return self.predictor.predict_rows(inputs)
        preprocessor = self.predictor.compiled_preprocessor
        if preprocessor is not None:
            return self.predictor.predict_matrix(matrix(preprocessor, inputs))
        return self.predictor.predict_rows(python_rows(inputs, self.schema))

    @staticmethod
    def _drop(exc: OutOfRange, positions: np.ndarray, refused: list) -> np.ndarray:
        """Refuse the rows the model cannot compute with; the positions (into `positions`) of the others."""
        first = {}
        for row, feature in exc.problems:
            first.setdefault(row, feature or "")
        refused += [(int(positions[row]), feature, OUT_OF_RANGE) for row, feature in sorted(first.items())]
        return np.setdiff1d(np.arange(len(positions)), list(first))


def _merge(a: Scored, b: Scored) -> Scored:
    if not len(b.positions):
        return a
    if not len(a.positions):
        return b
    order = np.argsort(np.concatenate([a.positions, b.positions]), kind="stable")
    labels = np.concatenate([np.asarray(a.labels, dtype=object), np.asarray(b.labels, dtype=object)])[order]
    proba = np.concatenate([a.proba, b.proba])[order] if a.proba is not None else None
    return Scored(np.concatenate([a.positions, b.positions])[order], labels, proba, a.refused)


def answers_table(batch: pa.Table, scored: Scored, keep: list[str], predictor: Predictor, model_name: str, version: int) -> pa.Table:
    """The kept columns, the prediction, the probabilities, the model name and version: the API's answer, in columns."""
    n = len(scored.positions)
    index = pa.array(scored.positions, type=pa.int64())
    columns = {name: batch.column(name).take(index) for name in keep}
    if predictor.class_names is not None:
        columns["prediction"] = _label_texts(np.asarray(scored.labels))
    else:
        columns["prediction"] = pa.array(np.asarray(scored.labels, dtype=np.float64))
    if scored.proba is not None:
        for j, name in enumerate(predictor.class_names):
            # float64 as the API's JSON gives them (the MLP computes in float32).
            columns[f"probability_{name}"] = pa.array(np.asarray(scored.proba[:, j], dtype=np.float64))
    columns["model"] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([model_name]))
    columns["version"] = pa.array(np.full(n, version, dtype=np.int64))
    return pa.table(columns)


def _label_texts(labels: np.ndarray) -> pa.Array:
    """str() of each label, as the API answers one (str(label) of labels.tolist()), computed once per distinct label."""
    if labels.dtype.kind in "biuf":
        encoded = pa.array(labels).dictionary_encode()
        distinct, codes = encoded.dictionary.to_pylist(), encoded.indices
    else:  # text labels: pyarrow would import pandas to convert them
        distinct, codes = np.unique(labels, return_inverse=True)
        distinct, codes = distinct.tolist(), pa.array(codes.ravel())
    return pa.array([str(label) for label in distinct], pa.string()).take(codes)


class OutputWriter:
    """Appends answer tables to a CSV or a Parquet file (one schema, from the first table)."""

    def __init__(self, path: Path):
        self.path = path
        self._writer = None
        self._schema = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._schema = table.schema
            if is_parquet(self.path):
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(self.path, table.schema)
            else:
                import pyarrow.csv as pacsv

                self._writer = pacsv.CSVWriter(self.path, table.schema)
        self._writer.write_table(table if table.schema.equals(self._schema) else table.cast(self._schema))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        else:
            self.path.write_text("")


class ErrorsWriter:
    """<output>.errors.csv: opened at the first refusal, written chunk by chunk (memory stays bounded)."""

    def __init__(self, path: Path):
        self.path = path
        path.unlink(missing_ok=True)  # a previous run's refusals would read as this one's
        self._file = self._csv = None

    def write(self, first_row: int, refused: list[tuple[int, str, str]]) -> None:
        if not refused:
            return
        if self._file is None:
            self._file = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._csv = csv.writer(self._file)
            self._csv.writerow(["row", "column", "reason"])
        self._csv.writerows((first_row + p + 1, column, reason) for p, column, reason in refused)

    @property
    def used(self) -> bool:
        return self._file is not None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@contextmanager
def _writing(path: Path):
    try:
        yield
    except (OSError, pa.ArrowException) as exc:  # a full disk, a folder without write permission
        raise ScoringError(f"--output {path}: cannot write it ({str(exc).splitlines()[0][:200]})") from None


def score_file(
    input_path: Path, output_path: Path, schema: FeatureSchema, predictor: Predictor, model_name: str, version: int,
    keep: list[str] = (), chunk_rows: int = CHUNK_ROWS, progress: bool = True,
) -> Summary:  # fmt: skip
    """Score `input_path` into `output_path` (and refused rows into errors_path_for(output_path))."""
    from tqdm.auto import tqdm

    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise ScoringError(f"{input_path}: no such file")
    if output_path.resolve() == input_path.resolve():
        raise ScoringError(f"--output {output_path} is the input file: name another file (it would be overwritten while it is read)")
    if not output_path.parent.is_dir():
        raise ScoringError(f"--output {output_path}: no folder {output_path.parent}; create it first")
    started = time.perf_counter()
    keep = [c for c in keep if c]
    columns = list(dict.fromkeys([*schema.names, *keep]))
    total = row_counts(input_path)
    scorer = ChunkScorer(schema, predictor)
    summary = Summary(classes=predictor.class_names)
    errors = ErrorsWriter(errors_path_for(output_path))
    writer = OutputWriter(output_path)
    bar = tqdm(total=total, unit=" rows", unit_scale=True, desc="scoring", disable=not progress, mininterval=0.5)
    try:
        for batch in read_chunks(input_path, columns, chunk_rows, keep):
            scored = scorer.score(batch)
            with _writing(output_path):
                errors.write(summary.rows, scored.refused)
                if len(scored.positions):
                    writer.write(answers_table(batch, scored, keep, predictor, model_name, version))
            summary.rows += batch.num_rows
            summary.scored += len(scored.positions)
            summary.refused += len(scored.refused)
            bar.update(batch.num_rows)
    except BaseException:
        if not bar.n:  # stopped before the first chunk (a missing column, an unreadable file): no empty bar above the error
            bar.leave = False
        raise
    finally:
        bar.close()
        with _writing(output_path):
            writer.close()
            errors.close()
    summary.errors_path = errors.path if errors.used else None
    summary.seconds = time.perf_counter() - started
    return summary
