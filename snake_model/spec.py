"""The model spec (config.json): everything serving needs to reproduce training's validation transform."""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

FORMAT_VERSION = 1
RESIZE_METHODS = ("crop", "squish", "pad", "rrc")
PAD_MODES = ("reflection", "zeros", "border")
HEADS = ("linear", "fastai")


class SpecError(ValueError):
    """config.json is missing, malformed or inconsistent with the weights."""


# The range each abstain score lives in (snake_model.ood): 1 - max softmax is in [0, 1]; the kNN score is
# 1 - cosine similarity, in [0, 2]. A threshold outside it abstains always or never.
SCORE_RANGES = {"max_softmax": (0.0, 1.0), "knn": (0.0, 2.0)}


# A plain timm model name: no "hf-hub:" / "local-dir:" source (network or files outside the model folder) and no
# ".pretrained_tag" (timm would try to resolve it); the weights always come from model.safetensors.
ARCH_NAME = re.compile(r"[a-z0-9_]{1,100}")
CLASS_INFO_STRINGS = ("display_name", "scientific_name")


@lru_cache(maxsize=1)
def _timm_models() -> frozenset[str]:
    import timm  # lazily: importing timm takes seconds, and the spec module does no work at import time

    return frozenset(timm.list_models())


ARCH_SEP, MAX_MEMBERS = "+", 4  # several backbones side by side (snake_model.network.MultiBody)


def split_arch(arch: str) -> list[str]:
    """The timm model names in an arch: one, or several joined by '+' (a MultiBody)."""
    return arch.split(ARCH_SEP)


def check_arch_name(arch: object) -> None:
    """Raise SpecError unless arch is a plain model name that the installed timm builds (e.g. tf_efficientnet_lite0),
    or up to MAX_MEMBERS of them joined by '+' (e.g. tf_efficientnet_lite0+tf_efficientnet_lite2)."""
    if not isinstance(arch, str):
        raise SpecError(f"arch must be a string, got {arch!r}")
    names = split_arch(arch)
    if len(names) > MAX_MEMBERS:
        raise SpecError(f"arch joins {len(names)} backbones; at most {MAX_MEMBERS} are supported, got {arch[:200]!r}")
    for name in names:
        if not ARCH_NAME.fullmatch(name):
            raise SpecError(
                f"arch must be a plain timm model name such as tf_efficientnet_lite0, or several joined by '+' "
                f"(lowercase letters, digits and underscores; no 'hf-hub:' or 'local-dir:' source, no "
                f"'.pretrained_tag'), got {arch[:120]!r}"
            )
        if name not in _timm_models():
            import timm

            raise SpecError(
                f"unknown arch {name!r}: the installed timm {timm.__version__} has no such model; "
                "use a timm model name such as tf_efficientnet_lite0"
            )


def check_class_info(class_info: dict) -> None:
    """class_info maps a label to {display_name: str, scientific_name: str, venomous: true/false}; null means unknown."""
    for label, info in class_info.items():
        if not isinstance(info, dict):
            raise SpecError(
                f"class_info[{label!r}] must be an object {{display_name, scientific_name, venomous}}, got {info!r}"
            )
        for key in CLASS_INFO_STRINGS:
            if info.get(key) is not None and not isinstance(info[key], str):
                raise SpecError(f"class_info[{label!r}].{key} must be a string, got {info[key]!r}")
        # a string "false" is truthy: it would put the venomous warning on a harmless species
        if info.get("venomous") is not None and not isinstance(info["venomous"], bool):
            raise SpecError(
                f"class_info[{label!r}].venomous must be true, false or null (JSON literals, not strings), "
                f"got {info['venomous']!r}"
            )


def _check_float(name: str, x, lo: float | None, hi: float | None, low_open: bool = False) -> None:
    """A finite real number (an int is fine; a bool, a string or NaN/Infinity is not) within [lo, hi]."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
        raise SpecError(f"{name} must be a finite number, got {x!r}")
    if lo is not None and (x <= lo if low_open else x < lo):
        raise SpecError(f"{name} must be {'>' if low_open else '>='} {lo}, got {x!r}")
    if hi is not None and x > hi:
        raise SpecError(f"{name} must be <= {hi}, got {x!r}")


def _check_int(name: str, x, lo: int | None, hi: int | None) -> None:
    """A whole number (not a float like 16.9, not a bool, not a string) within [lo, hi]."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise SpecError(f"{name} must be a whole number, got {x!r}")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise SpecError(
            f"{name} {x} is out of range {lo}..{hi}" if hi is not None else f"{name} must be >= {lo}, got {x}"
        )


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
    int8: dict = field(default_factory=dict)  # the body's int8 graph (snake_model.quant): {"file": str, "sha256": str}
    class_info: dict[str, dict] = field(default_factory=dict)  # label -> display_name, scientific_name, venomous
    versions: dict[str, str] = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION

    def validate(self) -> None:
        """Raise SpecError when a field has the wrong type or is out of range."""
        if not isinstance(self.labels, list) or not all(isinstance(x, str) for x in self.labels):
            raise SpecError(f"labels must be a list of names, got {self.labels!r}")
        for name in ("class_info", "ood", "int8", "training", "versions"):
            if not isinstance(getattr(self, name), dict):
                raise SpecError(f"{name} must be a JSON object, got {getattr(self, name)!r}")
        check_class_info(self.class_info)
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise SpecError(f"labels must be a non-empty list of unique names, got {self.labels!r}")
        if any(not x.strip() for x in self.labels):
            raise SpecError(f"labels must not be empty strings, got {self.labels!r}")
        seen: dict[str, str] = {}
        for label in self.labels:
            shown = self.display_name(label)
            if shown in seen:
                raise SpecError(
                    f"labels {seen[shown]!r} and {label!r} both display as {shown!r}; "
                    "give them distinct class_info display names"
                )
            seen[shown] = label
        for name in ("arch", "head", "resize_method", "pad_mode", "abstain_score", "weights_sha256"):
            if not isinstance(getattr(self, name), str):
                raise SpecError(f"{name} must be a string, got {getattr(self, name)!r}")
        check_arch_name(self.arch)
        if self.head not in HEADS:
            raise SpecError(f"head {self.head!r} is not one of {HEADS}")
        if self.resize_method not in RESIZE_METHODS:
            raise SpecError(f"resize_method {self.resize_method!r} is not one of {RESIZE_METHODS}")
        if self.pad_mode not in PAD_MODES:
            raise SpecError(f"pad_mode {self.pad_mode!r} is not one of {PAD_MODES}")
        _check_int("image_size", self.image_size, 16, 2048)
        _check_int("format_version", self.format_version, 1, None)
        if not isinstance(self.tta_flip, bool):
            raise SpecError(f"tta_flip must be true or false, got {self.tta_flip!r}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)) or len(v) != 3:
                raise SpecError(f"{name} needs three numbers (one per RGB channel), got {v!r}")
            for x in v:
                _check_float(name, x, 0.0 if name == "std" else None, None, low_open=name == "std")
        _check_float("tta_zoom", self.tta_zoom, 0.3, 1.0)
        _check_float("val_xtra", self.val_xtra, 0.0, 1.0)
        # train.metrics.fit_temperature searches [e^-3, e^3]; far outside, the softmax is one-hot or uniform
        _check_float("temperature", self.temperature, 0.01, 100.0)
        if self.abstain_score not in SCORE_RANGES:
            raise SpecError(f"abstain_score {self.abstain_score!r} is not 'max_softmax' or 'knn'")
        if self.abstain_threshold is not None:
            lo, hi = SCORE_RANGES[self.abstain_score]
            _check_float(f"abstain_threshold (a {self.abstain_score} score)", self.abstain_threshold, lo, hi)
        if "k" in self.ood:
            _check_int("ood.k", self.ood["k"], 1, None)
        for group in ("ood", "int8"):
            d = getattr(self, group)
            for key in ("file", "sha256"):
                if key in d and not (isinstance(d[key], str) and d[key]):
                    raise SpecError(f"{group}.{key} must be a non-empty string, got {d[key]!r}")
            if "file" in d and (Path(d["file"]).name != d["file"] or d["file"] in (".", "..")):
                raise SpecError(f"{group}.file must be a plain file name in the model directory, got {d['file']!r}")
        if self.int8:
            if not (self.int8.get("file") and self.int8.get("sha256")):
                raise SpecError("int8 needs file and sha256 (the int8 graph and its hash) in config.json")
            if self.head != "linear":
                raise SpecError(f"an int8 graph serves networks with a linear head only, not head {self.head!r}")
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
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise SpecError(f"{path} is not valid JSON: {e}") from e
        except RecursionError as e:  # "[[[[..." nested deeper than Python's parser recurses
            raise SpecError(f"{path} is not a usable config.json: its JSON is nested too deeply to read") from e
        except OSError as e:
            raise SpecError(f"{path} cannot be read: {e}") from e
        if not isinstance(d, dict):
            raise SpecError(f"{path} must hold a JSON object")
        try:
            return cls.from_dict(d)
        except (SpecError, TypeError) as e:  # name the file: the app shows this on its "could not load" page
            raise SpecError(f"{path}: {e}") from e
