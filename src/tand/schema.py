"""The feature schema: what a model takes and predicts. Written at training, read by the API.

It travels inside the MLflow model (the MLmodel file's metadata), so the registry
alone says what a version expects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from typing import Literal

Kind = Literal["numeric", "categorical"]
DType = Literal["number", "integer", "string", "boolean"]


def values_or_none(keys: Sequence) -> Callable[[dict], tuple]:
    """dict → the tuple of its values at `keys`, None for a key it lacks (an omitted nullable feature)."""
    return lambda row: tuple(row.get(key) for key in keys)


def values_getter(keys: Sequence) -> Callable[[object], tuple]:
    """row → the tuple of its values at `keys` (names of a dict, positions of a tuple), even for one key
    (itemgetter alone returns a bare value then)."""
    if len(keys) == 1:
        key = keys[0]
        return lambda row: (row[key],)
    return itemgetter(*keys)


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    dtype: DType
    categories: tuple | None = None  # known values of a categorical feature, sorted
    # The pipeline imputes it, so a request may send null or leave it out (the template imputes every
    # feature; schemas written before this flag existed say nothing, and refuse null as they did).
    nullable: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["categories"] = list(self.categories) if self.categories is not None else None
        return data


@dataclass(frozen=True)
class FeatureSchema:
    features: tuple[Feature, ...]
    task: Literal["classification", "regression"]
    label: str
    classes: tuple[str, ...] | None = None  # classification: label names, in the configured order
    framework: str = ""
    model: str = ""
    dropped: tuple[str, ...] = field(default_factory=tuple)
    # Binary classification: the class whose probability the threshold applies to (the training split's
    # minority) and the probability at or above which it is predicted. threshold None: the model's own
    # decision (argmax), as for schemas written before these fields existed.
    positive_class: str | None = None
    threshold: float | None = None

    def positive_index(self, class_names) -> int | None:
        """Column of the positive class among `class_names` when a threshold decides; else None."""
        names = list(class_names or ())
        if self.threshold is None or len(names) != 2 or self.positive_class not in names:
            return None
        return names.index(self.positive_class)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    def rows(self, records) -> list[tuple]:
        """Records (dicts keyed by feature name) as rows: tuples of their values in feature order (None
        for a feature left out), the form the API validates requests into and predicts from."""
        return list(map(values_or_none(self.names), records))

    def same_inputs(self, other: FeatureSchema) -> bool:
        """True when a request valid for one is valid for the other, with the same answer shape."""
        return (self.features, self.task, self.classes) == (other.features, other.task, other.classes)

    def describe_difference(self, new: FeatureSchema) -> str:
        """What a client would notice moving from this schema to `new`, in words; empty when nothing."""
        if self.same_inputs(new):
            return ""
        details = []
        removed = [n for n in self.names if n not in new.names]
        added = [n for n in new.names if n not in self.names]
        if removed:
            details.append(f"lacks {', '.join(removed[:8])}{' ...' if len(removed) > 8 else ''}")
        if added:
            details.append(f"adds {', '.join(added[:8])}{' ...' if len(added) > 8 else ''}")
        if not details and self.features != new.features:
            details.append("the types or categories of its features differ")
        if (self.task, self.classes) != (new.task, new.classes):
            details.append(f"predicts {new.task} {list(new.classes or [])} instead of {self.task} {list(self.classes or [])}")
        return "; ".join(details)

    def to_dict(self) -> dict:
        return {
            "features": [f.to_dict() for f in self.features],
            "task": self.task,
            "label": self.label,
            "classes": list(self.classes) if self.classes is not None else None,
            "framework": self.framework,
            "model": self.model,
            "dropped": list(self.dropped),
            "positive_class": self.positive_class,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSchema:
        features = tuple(
            Feature(
                name=f["name"],
                kind=f["kind"],
                dtype=f["dtype"],
                categories=tuple(f["categories"]) if f.get("categories") is not None else None,
                nullable=bool(f.get("nullable", False)),
            )
            for f in data["features"]
        )
        classes = data.get("classes")
        return cls(
            features=features,
            task=data["task"],
            label=data["label"],
            classes=tuple(classes) if classes is not None else None,
            framework=data.get("framework", ""),
            model=data.get("model", ""),
            dropped=tuple(data.get("dropped", ())),
            positive_class=data.get("positive_class"),
            threshold=float(data["threshold"]) if data.get("threshold") is not None else None,
        )
