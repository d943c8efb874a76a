"""The memory guard: before fitting, the size of the matrix the preprocessor will build, against a limit.

A dense one-hot of a high-cardinality column is rows × categories × 8 bytes (50,000 categories over
60,000 rows: 23 GB), and the kernel's OOM killer ends the process with no word about why. This module
estimates the encoded training matrix from the schema (every category the data holds, capped by
`train.max_categories`) and the layout tand.training.pipeline chooses (native codes, sparse or dense
one-hot), and stops with one line naming the widest column and the fixes when it would not fit.
The limit: `train.memory_limit_gb`, else half of the memory the kernel says is available now.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tand.config import TrainConfig
from tand.errors import DataError
from tand.schema import FeatureSchema

BYTES_PER_VALUE = 8  # float64, what the ColumnTransformer outputs
SPARSE_BYTES_PER_VALUE = 16  # a CSR entry: float64 value + int64 column index (scipy's conservative case)
# Copies of the dense matrix a fit holds at its peak (measured by bench/train_bench.py --rows 1000000: the
# MLP peaked at 2.8x its float64 matrix): the one-hot part is built, then stacked (2x); the MLP adds its
# float32 copy and the one sent to the PyTorch process.
DENSE_COPIES = 2.0
PYTORCH_COPIES = 2.5
GB = 1024**3


@dataclass(frozen=True)
class Estimate:
    bytes: float
    rows: int
    width: int
    layout: str  # "native" (one code per feature), "sparse" or "dense" (one-hot)
    widest: str | None  # the categorical column with the most encoded columns
    widest_width: int


def onehot_widths(schema: FeatureSchema, max_categories: int | None) -> dict[str, int]:
    """Encoded columns per categorical feature: its categories (capped by OneHotEncoder's max_categories)."""
    widths = {}
    for feature in schema.features:
        if feature.kind == "categorical":
            count = len(feature.categories or ()) or 1
            widths[feature.name] = min(count, max_categories) if max_categories else count
    return widths


def estimate(schema: FeatureSchema, cfg: TrainConfig, rows: int) -> Estimate:
    """The encoded training matrix's size as tand.training.pipeline.build_pipeline will build it."""
    from tand.training.pipeline import native_categories, sparse_onehot

    widths = onehot_widths(schema, cfg.max_categories)
    widest = max(widths, key=widths.get) if widths else None
    n_numeric = len(schema.numeric)
    if native_categories(cfg):
        width = n_numeric + len(widths)
        return Estimate(rows * width * BYTES_PER_VALUE, rows, width, "native", widest, widths.get(widest, 0))
    width = n_numeric + sum(widths.values())
    if sparse_onehot(schema, cfg):
        stored = rows * (n_numeric + len(widths))  # one non-zero per categorical feature per row
        return Estimate(stored * SPARSE_BYTES_PER_VALUE, rows, width, "sparse", widest, widths.get(widest, 0))
    copies = PYTORCH_COPIES if cfg.framework == "pytorch" else DENSE_COPIES
    return Estimate(rows * width * BYTES_PER_VALUE * copies, rows, width, "dense", widest, widths.get(widest, 0))


def available_bytes(meminfo: str | Path = "/proc/meminfo") -> float | None:
    """What the kernel says could be allocated now without swapping (MemAvailable), or psutil's figure."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return float(psutil.virtual_memory().available)


def limit_bytes(cfg: TrainConfig) -> float | None:
    """`train.memory_limit_gb`, else half of the available memory; None: unknown (no guard)."""
    if cfg.memory_limit_gb is not None:
        return cfg.memory_limit_gb * GB
    available = available_bytes()
    return available / 2 if available else None


def check(schema: FeatureSchema, cfg: TrainConfig, rows: int) -> Estimate:
    """Raise a one-line DataError when the encoded training matrix would pass the limit; else the estimate."""
    found = estimate(schema, cfg, rows)
    limit = limit_bytes(cfg)
    if limit is None or found.bytes <= limit:
        return found
    raise DataError(_message(found, limit, cfg))


def _message(found: Estimate, limit: float, cfg: TrainConfig) -> str:
    from tand.models.catalog import NATIVE_CATEGORIES, installed_boosting

    where = "train.memory_limit_gb" if cfg.memory_limit_gb is not None else "half the available memory; set train.memory_limit_gb"
    size = (
        f"the encoded training matrix would take {found.bytes / GB:.1f} GB ({found.rows:,} rows × {found.width:,} "
        f"{found.layout} columns), over the {limit / GB:.1f} GB limit ({where})"
    )
    natives = ", ".join(sorted(n for n in NATIVE_CATEGORIES if n == "hist_gradient_boosting" or n in installed_boosting()))
    if found.widest is None or found.layout == "native":
        return f"{size}; use fewer rows or features, or a machine with more memory"
    return (
        f"{size}: column {found.widest!r} alone is one-hot encoded into {found.widest_width:,} columns; "
        f"drop it (train.to_drop), declare it numeric if its values are numbers (train.numeric), group its rare "
        f"categories (train.max_categories, e.g. 50), or use a model that takes categories natively ({natives})"
    )


def release_free_memory() -> None:
    """Hand the heap's free pages back to the kernel (glibc's malloc_trim). Reading a CSV and converting its
    columns frees as much as the frame keeps, in pieces malloc holds on to: a million rows of 11 columns
    leave 140 MB resident that nothing uses, which a forked worker would inherit and count as its own.
    Elsewhere than glibc (macOS, musl) it does nothing."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
