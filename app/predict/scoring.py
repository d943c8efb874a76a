"""Batch scoring (`invoke predict`): a CSV or Parquet file in, the API's answers out, in bounded chunks.

Each chunk's rows go through what POST /predict runs: the request parser (the same validation, so a row
gets exactly the answer the API would give it, or the 422 reason it would get) and the served version's
predictor (the compiled NumPy path where the API has it). A CSV's cells are text: each is read as the
JSON value a client would send for its feature (a number, a whole number, a known category, a boolean;
a missing marker as null), and a cell that is none of these is sent as it is, for the parser to refuse
with its reason. A refused row does not stop the file: its row number (1 = the first data row) and the
reason go to the errors file beside the output; the other rows of its chunk are scored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd

from app.predict.parser import RequestError, RequestParser
from app.predict.predictor import OutOfRange, Predictor
from tand.config import MISSING_MARKERS
from tand.errors import TandError
from tand.schema import Feature, FeatureSchema

CHUNK_ROWS = 20_000
PARQUET_SUFFIXES = (".parquet", ".pq")
_TRUE, _FALSE = {"true", "True", "TRUE", "1"}, {"false", "False", "FALSE", "0"}


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


def read_chunks(path: Path, columns: list[str], chunk_rows: int, text_columns=()) -> Iterator[pd.DataFrame]:
    """The input's chunks (only `columns`). CSV: missing markers as NaN, `text_columns` as text, the others
    parsed by pandas (a column with a cell that is not a number stays text, for the parser to judge)."""
    if is_parquet(path):
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        missing = [c for c in columns if c not in parquet.schema_arrow.names]
        _check_columns(path, missing)
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
            yield batch.to_pandas()
        return
    from tand.training.reading import sniff_separator

    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        separator = sniff_separator(handle.readline())
    header = pd.read_csv(path, nrows=0, sep=separator, encoding="utf-8-sig").columns
    _check_columns(path, [c for c in columns if c not in header])
    yield from pd.read_csv(
        path, sep=separator, encoding="utf-8-sig", dtype={c: str for c in text_columns}, keep_default_na=False,
        na_values=[*MISSING_MARKERS, ""], usecols=columns, chunksize=chunk_rows,
    )  # fmt: skip


def _check_columns(path: Path, missing: list[str]) -> None:
    if missing:
        raise ScoringError(f"{path}: no column {', '.join(map(repr, missing))}, which the model takes as input")


def row_counts(path: Path) -> int | None:
    if is_parquet(path):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def _json_values(column: pd.Series, feature: Feature, missing: frozenset) -> list:
    """A column's cells as the JSON values a client would send for this feature (vectorised: pandas parses
    the numbers; only cells that are none of the feature's kind are sent as their text)."""
    if column.dtype != object and not pd.api.types.is_string_dtype(column):  # Parquet: typed already
        values = column.astype(object).where(column.notna(), None).tolist()
        return [v.item() if isinstance(v, np.generic) else v for v in values] if column.dtype.kind not in "fiub" else values
    text = column.astype(object).where(column.notna(), "").astype(str).str.strip()
    absent = text.isin(missing).to_numpy()
    if feature.kind == "categorical" and feature.dtype == "string":
        values = text.tolist()
    elif feature.dtype == "boolean":
        values = text.map(lambda t: True if t in _TRUE else False if t in _FALSE else t).tolist()
    else:
        numbers = pd.to_numeric(text.where(~absent), errors="coerce").to_numpy(dtype=np.float64)
        unparsed = np.isnan(numbers) & ~absent
        values = numbers.tolist()
        if feature.dtype == "integer":
            whole = ~np.isnan(numbers) & (np.abs(numbers) < 2**53)
            whole[whole] = numbers[whole] == np.floor(numbers[whole])
            for i in np.flatnonzero(whole):
                values[i] = int(numbers[i])
        for i in np.flatnonzero(unparsed):
            values[i] = text.iat[i]  # the parser names what is wrong with it
    for i in np.flatnonzero(absent):
        values[i] = None
    return values


class ChunkScorer:
    """One chunk → (answers for the rows the API accepts, their positions, refusals)."""

    def __init__(self, schema: FeatureSchema, predictor: Predictor, chunk_rows: int):
        self.schema = schema
        self.predictor = predictor
        self.parser = RequestParser(schema, max_rows=chunk_rows)
        self._missing = frozenset(MISSING_MARKERS) | {""}
        self._encoder = msgspec.json.Encoder()

    def records(self, chunk: pd.DataFrame) -> list[dict]:
        columns = {f.name: _json_values(chunk[f.name], f, self._missing) for f in self.schema.features}
        names = list(columns)
        return [dict(zip(names, values)) for values in zip(*columns.values())] if names else [{}] * len(chunk)

    def score(self, records: list[dict]) -> tuple[list[int], list[dict], list[tuple[int, str, str]]]:
        """(positions scored, their answers, (position, column, reason) refused)."""
        positions = list(range(len(records)))
        refused: list[tuple[int, str, str]] = []
        while positions:
            try:
                rows, _ = self.parser.parse(self._encoder.encode([records[i] for i in positions]))
                return positions, self.predictor.answers(rows), refused
            except RequestError as exc:
                bad = _refusals(exc.errors, positions)
            except OutOfRange as exc:
                bad = {positions[r]: (feature or "", "too far out of range for the model to compute with") for r, feature in exc.problems}
            if not bad:
                raise ScoringError("the API's parser refused a chunk without naming a row")
            refused += [(p, col, why) for p, (col, why) in sorted(bad.items())]
            positions = [p for p in positions if p not in bad]
        return [], [], refused


def _refusals(errors: list[dict], positions: list[int]) -> dict[int, tuple[str, str]]:
    bad: dict[int, tuple[str, str]] = {}
    for error in errors:
        loc = error.get("loc", [])
        if len(loc) >= 2 and isinstance(loc[1], int) and loc[1] < len(positions):
            column = str(loc[2]) if len(loc) > 2 else ""
            bad.setdefault(positions[loc[1]], (column, str(error.get("msg", "invalid"))))
    return bad


def answers_frame(answers: list[dict], classes, keep: pd.DataFrame, model_name: str, version: int) -> pd.DataFrame:
    frame = keep.reset_index(drop=True).copy()
    frame["prediction"] = [a["prediction"] for a in answers]
    if classes is not None and answers and "probabilities" in answers[0]:
        for name in classes:
            frame[f"probability_{name}"] = [a["probabilities"][name] for a in answers]
    frame["model"] = model_name
    frame["version"] = version
    return frame


class OutputWriter:
    """Appends answer chunks to a CSV or a Parquet file (one schema, from the first chunk)."""

    def __init__(self, path: Path):
        self.path = path
        self._parquet = None
        self._started = False

    def write(self, frame: pd.DataFrame) -> None:
        if is_parquet(self.path):
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        else:
            frame.to_csv(self.path, mode="a" if self._started else "w", header=not self._started, index=False)
        self._started = True

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif not self._started:
            self.path.write_text("")


def score_file(
    input_path: Path, output_path: Path, schema: FeatureSchema, predictor: Predictor, model_name: str, version: int,
    keep: list[str] = (), chunk_rows: int = CHUNK_ROWS, progress: bool = True,
) -> Summary:  # fmt: skip
    """Score `input_path` into `output_path` (and refused rows into errors_path_for(output_path))."""
    from tqdm.auto import tqdm

    import csv
    import time

    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise ScoringError(f"{input_path}: no such file")
    started = time.perf_counter()
    keep = [c for c in keep if c]
    columns = list(dict.fromkeys([*schema.names, *keep]))
    scorer = ChunkScorer(schema, predictor, chunk_rows)
    summary = Summary(classes=predictor.class_names)
    errors_path = errors_path_for(output_path)
    errors_path.unlink(missing_ok=True)  # a previous run's refusals would read as this one's
    errors_file = errors = None  # opened at the first refusal, written chunk by chunk (memory stays bounded)
    writer = OutputWriter(output_path)
    bar = tqdm(total=row_counts(input_path), unit=" rows", unit_scale=True, desc="scoring", disable=not progress, mininterval=0.5)
    try:
        text = [f.name for f in schema.features if f.kind == "categorical" and f.dtype in ("string", "boolean")] + keep
        for chunk in read_chunks(input_path, columns, chunk_rows, text):
            positions, answers, refused = scorer.score(scorer.records(chunk))
            if refused and errors is None:
                errors_file = open(errors_path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed below
                errors = csv.writer(errors_file)
                errors.writerow(["row", "column", "reason"])
                summary.errors_path = errors_path
            if refused:
                errors.writerows((summary.rows + p + 1, column, reason) for p, column, reason in refused)
            if positions:
                kept = chunk.iloc[positions][keep] if keep else pd.DataFrame(index=range(len(positions)))
                writer.write(answers_frame(answers, predictor.class_names, kept, model_name, version))
            summary.rows += len(chunk)
            summary.scored += len(positions)
            summary.refused += len(refused)
            bar.update(len(chunk))
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ScoringError(f"{input_path}: cannot be read as {'Parquet' if is_parquet(input_path) else 'CSV'} ({str(exc).splitlines()[0][:200]})") from None
    finally:
        bar.close()
        writer.close()
        if errors_file is not None:
            errors_file.close()
    summary.seconds = time.perf_counter() - started
    return summary
