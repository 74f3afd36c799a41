"""Two backbones side by side (MultiBody) and the int8 graph of the body (snake_model.quant)."""

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from sklearn.metrics import log_loss

from snake_model.artifact import ArtifactError, load_artifact, load_int8_graph, save_artifact
from snake_model.gradcam import gradcam
from snake_model.network import FAST_ARCH, MultiBody, build_network
from snake_model.predictor import Predictor
from snake_model.quant import GraphError, Int8Net, check_graph, export_body, quantize_body
from snake_model.spec import ModelSpec, SpecError, check_arch_name
from train.recipe_fast import FAST, final_head, fit_linear_head, fit_member_heads, head_cv, logit_mean, member_widths

PAIR = "tf_efficientnet_lite0+tf_efficientnet_lite1"  # random init in tests: any two members do
SIZE = 64


def photos(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random images (N, 3, SIZE, SIZE) in the network's input range: calibration and test inputs."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(-1, 1, size=(n, 3, 8, 8)).astype(np.float32)
    return torch.nn.functional.interpolate(torch.from_numpy(small), size=(SIZE, SIZE), mode="bilinear").numpy()


@pytest.fixture(scope="module")
def pair_net():
    torch.manual_seed(0)
    net = build_network(PAIR, 3, pretrained=False, tta_flip=True, tta_zoom=0.8).eval()
    with torch.no_grad():
        net.head.fc.weight.normal_(0, 0.05)  # logits of a size that shows quantization differences
    return net


@pytest.fixture(scope="module")
def pair_graph(pair_net):
    return quantize_body(pair_net.body, SIZE, photos(16))


def test_multibody_joins_the_members_feature_maps_and_keys(pair_net):
    assert isinstance(pair_net.body, MultiBody)
    widths = member_widths(pair_net)
    assert widths == [1280, 1280] and pair_net.body.num_features == 2560
    keys = pair_net.state_dict()
    assert "body.bodies.0.conv_stem.weight" in keys and "body.bodies.1.conv_stem.weight" in keys
    x = torch.from_numpy(photos(2))
    with torch.inference_mode():
        joined = pair_net.body(x)
        first, second = (b(x) for b in pair_net.body.bodies)
    assert joined.shape == (2, 2560, 2, 2)
    torch.testing.assert_close(joined[:, :1280], first)
    torch.testing.assert_close(joined[:, 1280:], second)


def test_multibody_arch_names_are_checked_member_by_member():
    check_arch_name(FAST_ARCH)
    check_arch_name(PAIR)
    with pytest.raises(SpecError, match="unknown arch 'no_such_net'"):
        check_arch_name("tf_efficientnet_lite0+no_such_net")
    with pytest.raises(SpecError, match="plain timm model name"):
        check_arch_name("tf_efficientnet_lite0+hf-hub:evil/net")
    with pytest.raises(SpecError, match="at most 4"):
        check_arch_name("+".join(["tf_efficientnet_lite0"] * 5))
    with pytest.raises(SpecError, match="plain timm model name"):
        check_arch_name("tf_efficientnet_lite0+")


def test_members_with_different_input_normalisations_are_refused():
    with pytest.raises(ValueError, match="different input normalisations"):
        build_network("tf_efficientnet_lite0+resnet18", 3, pretrained=False)


def test_member_heads_average_the_members_logits_with_cs_chosen_together():
    rng = np.random.default_rng(0)
    n, y = 90, np.arange(90) % 3
    x = np.concatenate([rng.normal(size=(3, 5))[y] + rng.normal(size=(n, 5)), rng.normal(size=(3, 7))[y] * 0.5
                        + rng.normal(size=(n, 7))], 1)  # fmt: skip
    groups = np.arange(n)
    w, b, log = fit_member_heads(x, y, groups, 3, seed=0, scored=None, widths=[5, 7])
    c0, c1 = log["C"]
    (w0, b0), (w1, b1) = final_head(x[:, :5], y, c0), final_head(x[:, 5:], y, c1)
    np.testing.assert_allclose(x @ w.T + b, ((x[:, :5] @ w0.T + b0) + (x[:, 5:] @ w1.T + b1)) / 2, atol=1e-4)
    # the pair of Cs is the one whose averaged out-of-fold predictions have the lowest log-loss
    (_, oof0), (_, oof1) = head_cv(x[:, :5], y, groups, 3, 0), head_cv(x[:, 5:], y, groups, 3, 0)
    losses = {(a, c): log_loss(y, logit_mean([oof0[a], oof1[c]]), labels=[0, 1, 2]) for a in oof0 for c in oof1}
    assert len(losses) == len(FAST["Cs"]) ** 2
    assert (c0, c1) == min(losses, key=losses.get)
    assert log["cv_log_loss"][f"{c0}/{c1}"] == pytest.approx(losses[c0, c1])
    np.testing.assert_allclose(log["oof_probs"], logit_mean([oof0[c0], oof1[c1]]), atol=1e-9)
    np.testing.assert_allclose(log["oof_probs"].sum(1), 1, atol=1e-9)
    # one member: exactly fit_linear_head
    w2, b2, log2 = fit_member_heads(x[:, :5], y, groups, 3, seed=0, scored=None, widths=[5])
    w3, b3, log3 = fit_linear_head(x[:, :5], y, groups, 3, seed=0)
    np.testing.assert_allclose(w2, w3)
    assert log2["C"] == log3["C"]


def test_int8_graph_is_standard_onnx_and_close_to_float32(pair_net, pair_graph):
    check_graph(pair_graph)
    m = onnx.load_from_string(pair_graph)
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, "the graph must really be quantized"
    net = Int8Net(pair_graph, pair_net, SIZE, threads=1)
    x = photos(6, seed=1)
    logits, feats = net(x)
    with torch.inference_mode():
        ref_logits, ref_feats = (t.numpy() for t in pair_net.logits_and_features(torch.from_numpy(x)))
    assert feats.shape == ref_feats.shape == (6, 2560)
    cos = (feats * ref_feats).sum(1) / np.linalg.norm(feats, axis=1) / np.linalg.norm(ref_feats, axis=1)
    assert cos.min() > 0.9, cos
    assert not np.allclose(feats, ref_feats, atol=1e-5), "int8 features equal float32 ones: nothing was quantized"
    w, b = pair_net.head.fc.weight.detach().numpy(), pair_net.head.fc.bias.detach().numpy()
    np.testing.assert_allclose(logits, feats @ w.T + b, atol=1e-4)
    # the second view is averaged in, as the network averages it: without tta_flip the features differ
    plain = Int8Net(pair_graph, build_network(PAIR, 3, pretrained=False).eval(), SIZE, threads=1)
    assert not np.allclose(plain(x)[1], feats, atol=1e-3)
    assert net(x[:0])[1].shape == (0, 2560)


def test_int8_graph_that_does_not_fit_the_network_is_refused(pair_net, pair_graph):
    with pytest.raises(GraphError, match="takes 64 px"):
        Int8Net(pair_graph, pair_net, 96, threads=1)
    single = build_network("tf_efficientnet_lite0", 3, pretrained=False).eval()
    with pytest.raises(GraphError, match="2560 features but the network's head takes 1280"):
        Int8Net(pair_graph, single, SIZE, threads=1)
    fastai = build_network(PAIR, 3, head="fastai", pretrained=False).eval()
    with pytest.raises(GraphError, match="linear head"):
        Int8Net(pair_graph, fastai, SIZE, threads=1)


def test_check_graph_refuses_foreign_operators_external_data_and_garbage():
    with pytest.raises(GraphError, match="not a readable ONNX model"):
        check_graph(b"\x00not onnx at all")
    net = build_network("tf_efficientnet_lite0", 2, pretrained=False).eval()
    m = onnx.load_from_string(export_body(net.body, 32))
    check_graph(m.SerializeToString())
    foreign = onnx.ModelProto()
    foreign.CopyFrom(m)
    foreign.graph.node[0].domain = "com.example.custom"
    with pytest.raises(GraphError, match="com.example.custom"):
        check_graph(foreign.SerializeToString())
    external = onnx.ModelProto()
    external.CopyFrom(m)
    t = external.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value="/etc/passwd")
    with pytest.raises(GraphError, match="external files"):
        check_graph(external.SerializeToString())


def _pair_artifact(tmp_path, net, graph):
    spec = ModelSpec(labels=["a", "b", "c"], arch=PAIR, image_size=SIZE, resize_method="squish", tta_flip=True,
                     tta_zoom=0.8)  # fmt: skip
    return save_artifact(net, spec, tmp_path / "m", int8_graph=graph)


def test_artifact_round_trip_with_int8_graph_and_predictor_serves_it(tmp_path, pair_net, pair_graph):
    out = _pair_artifact(tmp_path, pair_net, pair_graph)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == PAIR and cfg["int8"]["file"] == "features.int8.onnx"
    model, spec = load_artifact(out)
    assert load_int8_graph(out, spec) == pair_graph
    for a, b in zip(model.state_dict().values(), pair_net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    img = Image.fromarray(np.uint8(np.random.default_rng(3).uniform(0, 255, (50, 70, 3))))
    fast, exact = Predictor(out), Predictor(out, backend="torch")
    assert fast.backend == "onnx-int8" and exact.backend == "torch"
    p, q = fast.predict_proba([img]), exact.predict_proba([img])
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)
    assert np.abs(p - q).max() < 0.1, "int8 answers must stay within quantization noise of float32"
    cam, idx = gradcam(model, spec, img)
    assert cam.shape == (SIZE, SIZE) and 0 <= idx < 3 and 0 < cam.max() <= 1


def test_a_changed_or_missing_int8_graph_is_refused_by_every_backend(tmp_path, pair_net, pair_graph):
    out = _pair_artifact(tmp_path, pair_net, pair_graph)
    graph = out / "features.int8.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\x01")
    for backend in ("auto", "torch"):
        with pytest.raises(ArtifactError, match="int8 graph was changed"):
            Predictor(out, backend=backend)
    graph.unlink()
    with pytest.raises(ArtifactError, match="features.int8.onnx not found"):
        Predictor(out)


def test_spec_int8_needs_file_hash_and_a_linear_head():
    base = {"labels": ["a", "b"], "arch": "tf_efficientnet_lite0", "image_size": 64, "resize_method": "crop",
            "weights_sha256": "x"}  # fmt: skip
    ModelSpec.from_dict({**base, "int8": {"file": "features.int8.onnx", "sha256": "ab"}})
    with pytest.raises(SpecError, match="int8 needs file and sha256"):
        ModelSpec.from_dict({**base, "int8": {"file": "features.int8.onnx"}})
    with pytest.raises(SpecError, match="plain file name"):
        ModelSpec.from_dict({**base, "int8": {"file": "../x.onnx", "sha256": "ab"}})
    with pytest.raises(SpecError, match="linear head only"):
        ModelSpec.from_dict({**base, "head": "fastai", "int8": {"file": "f.onnx", "sha256": "ab"}})
