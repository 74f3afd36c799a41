"""The model spec (config.json): everything serving needs to reproduce training's validation transform."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT_VERSION = 1
RESIZE_METHODS = ("crop", "squish", "pad", "rrc")
PAD_MODES = ("reflection", "zeros", "border")


class SpecError(ValueError):
    """config.json is missing, malformed or inconsistent with the weights."""


@dataclass
class ModelSpec:
    labels: list[str]
    arch: str = "tf_efficientnet_lite0"
    head: str = "linear"
    image_size: int = 224
    resize_method: str = "squish"
    pad_mode: str = "reflection"
    tta_flip: bool = False  # the network averages its answer over the image and its mirror image
    tta_zoom: float = 1.0  # with tta_flip: the mirror view shows the central tta_zoom part (1: all of it)
    val_xtra: float = 0.14  # fastai RandomResizedCrop's extra margin at validation
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    temperature: float = 1.0
    abstain_threshold: float | None = None
    abstain_score: str = "max_softmax"  # or "knn": needs ood.safetensors (see snake_model.ood)
    ood: dict = field(default_factory=dict)  # knn: {"k": int, "file": "ood.safetensors", "sha256": str}
    class_info: dict[str, dict] = field(default_factory=dict)  # label -> display_name, scientific_name, venomous
    versions: dict[str, str] = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION

    def validate(self) -> None:
        """Raise SpecError when a field is out of range."""
        if not isinstance(self.labels, list) or not all(isinstance(x, str) for x in self.labels):
            raise SpecError(f"labels must be a list of names, got {self.labels!r}")
        for name in ("class_info", "ood", "training", "versions"):
            if not isinstance(getattr(self, name), dict):
                raise SpecError(f"{name} must be a JSON object, got {getattr(self, name)!r}")
        if not all(isinstance(v, dict) for v in self.class_info.values()):
            raise SpecError("class_info must map each label to an object {display_name, scientific_name, venomous}")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise SpecError(f"labels must be a non-empty list of unique names, got {self.labels!r}")
        if self.resize_method not in RESIZE_METHODS:
            raise SpecError(f"resize_method {self.resize_method!r} is not one of {RESIZE_METHODS}")
        if self.pad_mode not in PAD_MODES:
            raise SpecError(f"pad_mode {self.pad_mode!r} is not one of {PAD_MODES}")
        if not (16 <= int(self.image_size) <= 2048):
            raise SpecError(f"image_size {self.image_size} is out of range 16..2048")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise SpecError("mean and std need three values each, std > 0")
        if not 0.3 <= float(self.tta_zoom) <= 1:
            raise SpecError(f"tta_zoom must be between 0.3 and 1, got {self.tta_zoom}")
        if not self.temperature > 0:
            raise SpecError(f"temperature must be > 0, got {self.temperature}")
        if self.abstain_score not in ("max_softmax", "knn"):
            raise SpecError(f"abstain_score {self.abstain_score!r} is not 'max_softmax' or 'knn'")
        if self.abstain_score == "knn" and not self.ood.get("sha256"):
            raise SpecError("abstain_score 'knn' needs ood.sha256 (the feature bank's hash) in config.json")
        if self.format_version > FORMAT_VERSION:
            raise SpecError(
                f"config.json has format_version {self.format_version}; this code reads up to "
                f"{FORMAT_VERSION}. Upgrade snake_model."
            )

    def display_name(self, label: str) -> str:
        """'Display name (Scientific name)' when the artifact carries them, else a tidy label."""
        info = self.class_info.get(label, {})
        name = info.get("display_name") or label.replace("_", " ")
        sci = info.get("scientific_name")
        return f"{name} ({sci})" if sci and sci.lower() != name.lower() else name

    def to_json(self) -> str:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    def save(self, path: str | Path) -> None:
        self.validate()
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("labels", "arch", "image_size", "resize_method", "weights_sha256") if k not in d]
        if missing:
            raise SpecError(f"config.json lacks required fields: {', '.join(missing)}")
        try:
            spec = cls(**{k: v for k, v in d.items() if k in known})
            spec.mean, spec.std = tuple(spec.mean), tuple(spec.std)
            spec.validate()
        except SpecError:
            raise
        except (TypeError, ValueError, AttributeError) as e:  # a field of the wrong type: "image_size": "big"
            raise SpecError(f"config.json has a field of the wrong type or value ({e})") from e
        return spec

    @classmethod
    def load(cls, path: str | Path) -> ModelSpec:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise SpecError(f"{path} not found: a model directory needs config.json and model.safetensors") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SpecError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(d, dict):
            raise SpecError(f"{path} must hold a JSON object")
        try:
            return cls.from_dict(d)
        except TypeError as e:
            raise SpecError(f"{path}: {e}") from e
