"""Data file → frame. A CSV is read as `train.csv` says: separator (detected from the header line when not
given), encoding, decimal mark, missing-value markers; every failure names the `train.csv` key that fixes
it. A Parquet file (.parquet, .pq) carries its own types: its nulls are missing, and so are text cells
equal to one of `train.csv.missing_values` (as in a CSV); category columns become their values, dates text."""

from __future__ import annotations

import codecs
import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from tand.config import CsvConfig
from tand.errors import DataError

# Tried in this order on the header line when `train.csv.separator` is not set; the one that splits it
# into the most columns wins (a header rarely holds a separator of another kind in its names).
SEPARATORS = (",", ";", "\t", "|")
_SEPARATOR_NAMES = {",": "','", ";": "';'", "\t": "'\\t' (tab)", "|": "'|'"}


PARQUET_SUFFIXES = (".parquet", ".pq")


def read_table(path: str | Path, options: CsvConfig | None = None) -> pd.DataFrame:
    """A CSV or, by its extension, a Parquet file as a frame with the same conventions."""
    if Path(path).suffix.lower() in PARQUET_SUFFIXES:
        return read_parquet(path, options)
    return read_csv(path, options)


def read_parquet(path: str | Path, options: CsvConfig | None = None) -> pd.DataFrame:
    """A Parquet file as read_csv would give its data: NumPy numbers (NaN for nulls), text as text."""
    import pyarrow

    options = options or CsvConfig()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"train.data_path: file {str(path)!r} not found; put your Parquet file there or change data_path")
    try:
        frame = pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"train.data_path: {str(path)!r} cannot be read as Parquet ({str(exc).strip()[:200]})") from None
    names = [str(c).strip() for c in frame.columns]
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    if duplicates:
        raise DataError(
            f"train.data_path: column {duplicates[0]!r} appears {names.count(duplicates[0])} times in {str(path)!r}; "
            "rename or remove the copies so that each column has its own name"
        )
    frame.columns = names
    markers = set(options.missing_values)
    for name in names:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            column = column.astype(column.cat.categories.dtype if column.cat.categories.dtype.kind in "biuf" else object)
        column = _numpy_backed(column)
        if pd.api.types.is_datetime64_any_dtype(column) or pd.api.types.is_timedelta64_dtype(column):
            column = column.astype(str).where(column.notna())
        if not pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column) and markers:
            column = column.where(~column.isin(markers))
        frame[name] = column
    return frame


def _numpy_backed(column: pd.Series) -> pd.Series:
    """Nullable numbers (Int64, Float64, Arrow) as NumPy's: float64 with NaN where missing, as a CSV reads them."""
    dtype = column.dtype
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and not isinstance(dtype, pd.StringDtype):
        if pd.api.types.is_bool_dtype(dtype):
            return column.astype(bool) if not column.isna().any() else column.astype(object).where(column.notna())
        if pd.api.types.is_integer_dtype(dtype) and not column.isna().any():
            return column.astype(np.int64)
        if pd.api.types.is_numeric_dtype(dtype):
            return column.astype(np.float64)
    return column


def read_csv(path: str | Path, options: CsvConfig | None = None) -> pd.DataFrame:
    """Read a CSV, tolerating a UTF-8 byte-order mark and stray spaces around column names."""
    options = options or CsvConfig()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"train.data_path: file {str(path)!r} not found; put your CSV there or change data_path")
    encoding = _python_encoding(options.encoding)
    header_line = _first_line(path, encoding, options.encoding)
    if not header_line.strip():
        raise DataError(f"train.data_path: {str(path)!r} is empty; it needs a header row and data rows")
    separator = options.separator or sniff_separator(header_line, options.decimal)
    _check_header(path, header_line, separator, options)
    try:
        frame = pd.read_csv(
            path,
            sep=separator,
            decimal=options.decimal,
            encoding=encoding,
            skipinitialspace=True,
            keep_default_na=False,
            na_values=options.missing_values,
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"train.data_path: {str(path)!r} is empty; it needs a header row and data rows") from None
    except UnicodeDecodeError as exc:
        raise _encoding_error(path, options.encoding, exc) from None
    except pd.errors.ParserError as exc:
        raise DataError(
            f"train.data_path: {str(path)!r} cannot be read with separator {_SEPARATOR_NAMES.get(separator, repr(separator))} "
            f"({str(exc).strip()}); set train.csv.separator to the file's separator, or quote cells that contain it"
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def sniff_separator(header_line: str, decimal: str = ".") -> str:
    """The candidate that splits the header line into the most fields (',' when none splits it)."""
    candidates = [s for s in SEPARATORS if s != decimal]
    counts = {s: len(next(csv.reader([header_line], delimiter=s))) for s in candidates}
    best = max(candidates, key=lambda s: counts[s])  # max keeps the first on a tie: ',' before ';'
    return best if counts[best] > 1 else ","


def _python_encoding(name: str) -> str:
    # A byte-order mark is common in exports from Excel; "utf-8-sig" reads files with and without one.
    return "utf-8-sig" if codecs.lookup(name).name == "utf-8" else name


def _first_line(path: Path, encoding: str, configured: str) -> str:
    try:
        with path.open(encoding=encoding, newline="") as handle:
            return handle.readline()
    except UnicodeDecodeError as exc:
        raise _encoding_error(path, configured, exc) from None


def _encoding_error(path: Path, configured: str, exc: UnicodeDecodeError) -> DataError:
    byte = exc.object[exc.start : exc.start + 1].hex()
    others = [e for e in ("latin-1", "cp1252", "utf-8") if codecs.lookup(e).name != codecs.lookup(configured).name]
    return DataError(
        f"train.csv.encoding: {str(path)!r} is not {configured} text (byte 0x{byte} cannot be decoded); "
        f"set train.csv.encoding to the file's encoding, e.g. {' or '.join(map(repr, others[:2]))} "
        "(exports from Excel on Windows are often cp1252)"
    )


def _check_header(path: Path, header_line: str, separator: str, options: CsvConfig) -> None:
    """Duplicate names are refused here: pandas would silently rename them `a`, `a.1`."""
    names = [name.strip() for name in next(csv.reader([header_line], delimiter=separator))]
    # Empty names are not duplicates: pandas names them "Unnamed: N" (checked later as columns with no values).
    duplicates = [name for name, count in Counter(names).items() if count > 1 and name]
    if duplicates:
        name = duplicates[0]
        raise DataError(
            f"train.data_path: column {name!r} appears {names.count(name)} times in the header of {str(path)!r}; "
            "rename or remove the copies so that each column has its own name"
        )
    if len(names) == 1 and options.separator is not None:
        found = [s for s in SEPARATORS if s in header_line]
        if found:
            raise DataError(
                f"train.csv.separator: the header of {str(path)!r} does not contain {_SEPARATOR_NAMES.get(separator, repr(separator))} "
                f"but contains {_SEPARATOR_NAMES[found[0]]}; set train.csv.separator to {found[0]!r} or remove it to detect it"
            )
