"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/): small valid files that
reach deep into each reader. Run from the repository root with any Python that has numpy, onnx,
safetensors and Pillow:  python fuzz/make_corpus.py

Seeds are kept small (< 100 KB each, < 2 MB in all) so that libFuzzer mutates them quickly.
"""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from safetensors.numpy import save as save_safetensors

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
rng = np.random.default_rng(7)


def weights(*dims):
    return (rng.standard_normal(dims) * 0.5).astype(np.float32)


def write(target, name, data):
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ---------- ONNX ----------

def onnx_model(nodes, inits, input_dims, opset=13, extra_inputs=()):
    graph = helper.make_graph(
        nodes,
        "seed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_dims), *extra_inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def onnx_seeds():
    # Conv + bias, Relu, MaxPool, Flatten, Gemm (transB).
    write("onnx", "conv_pool_gemm.onnx", onnx_model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
            helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
        ],
        {"w": weights(2, 1, 3, 3), "b": weights(2), "fc_w": weights(3, 18), "fc_b": weights(3)},
        ["N", 1, 6, 6],
    ))
    # BatchNormalization, Clip with constant bounds, GlobalAveragePool, Reshape, MatMul + Add, Softmax.
    write("onnx", "bn_clip_matmul_softmax.onnx", onnx_model(
        [
            helper.make_node("BatchNormalization", ["x", "g", "beta", "mean", "var"], ["bn"], name="bn", epsilon=1e-5),
            helper.make_node("Clip", ["bn", "lo", "hi"], ["cl"], name="relu6"),
            helper.make_node("GlobalAveragePool", ["cl"], ["gap"], name="gap"),
            helper.make_node("Constant", [], ["shape"], name="shape",
                             value=numpy_helper.from_array(np.array([-1, 3], dtype=np.int64))),
            helper.make_node("Reshape", ["gap", "shape"], ["flat"], name="reshape"),
            helper.make_node("MatMul", ["flat", "mw"], ["mm"], name="matmul"),
            helper.make_node("Add", ["mm", "mb"], ["logits"], name="bias"),
            helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
        ],
        {"g": weights(3), "beta": weights(3), "mean": weights(3), "var": np.abs(weights(3)) + 0.5,
         "lo": np.array(0.0, dtype=np.float32), "hi": np.array(6.0, dtype=np.float32),
         "mw": weights(3, 4), "mb": weights(4)},
        ["N", 3, 4, 4],
    ))
    # Residual Add, Concat, AveragePool with padding and SAME_UPPER Conv, Dropout, Identity.
    write("onnx", "residual_concat.onnx", onnx_model(
        [
            helper.make_node("Conv", ["x", "w1"], ["a"], name="conv_a", auto_pad="SAME_UPPER", strides=[2, 2]),
            helper.make_node("Relu", ["a"], ["ar"], name="relu_a"),
            helper.make_node("Conv", ["ar", "w2"], ["b"], name="conv_b", pads=[1, 1, 1, 1], group=2),
            helper.make_node("Add", ["ar", "b"], ["s"], name="residual"),
            helper.make_node("Concat", ["s", "ar"], ["cat"], name="concat", axis=1),
            helper.make_node("AveragePool", ["cat"], ["ap"], name="avg", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                             count_include_pad=1, ceil_mode=1, strides=[2, 2]),
            helper.make_node("Dropout", ["ap"], ["d"], name="dropout"),
            helper.make_node("Identity", ["d"], ["y"], name="identity"),
        ],
        {"w1": weights(2, 2, 3, 3), "w2": weights(2, 1, 3, 3)},
        [1, 2, 7, 7],
    ))
    # Opset 9: Clip bounds as attributes, Softmax on the last axis, raw double weights.
    w = numpy_helper.from_array(rng.standard_normal((4, 5)), "w64")
    graph = helper.make_graph(
        [
            helper.make_node("Clip", ["x"], ["c"], name="clip", min=-1.0, max=1.0),
            helper.make_node("Gemm", ["c", "w64"], ["g"], name="fc", alpha=0.5, beta=0.0),
            helper.make_node("Softmax", ["g"], ["y"], name="softmax", axis=1),
        ],
        "seed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4
    write("onnx", "opset9_double.onnx", model.SerializeToString())
    # A real exported model (PyTorch SqueezeNet-style, 40 KB).
    shutil.copy(ROOT / "tests/fixtures/models/squeezenet.onnx", CORPUS / "onnx" / "squeezenet.onnx")


# ---------- safetensors + JSON ----------

def st_json(arch, tensors):
    text = json.dumps(arch, separators=(",", ":")).encode()
    return text + b"\0" + save_safetensors(tensors)


def safetensors_seeds():
    fmt = "smoothgrad-arch/1"
    write("safetensors_json", "conv_pool_linear.bin", st_json(
        {"format": fmt, "input": [1, 6, 6], "layers": [
            {"type": "conv2d", "name": "conv", "padding": 1, "stride": 1},
            {"type": "relu"},
            {"type": "max_pool2d", "kernel": 2},
            {"type": "flatten"},
            {"type": "linear", "name": "fc"},
            {"type": "softmax", "axis": 1},
        ]},
        {"conv.weight": weights(2, 1, 3, 3), "conv.bias": weights(2),
         "fc.weight": weights(3, 18), "fc.bias": weights(3)},
    ))
    write("safetensors_json", "residual_concat_bn.bin", st_json(
        {"format": fmt, "input": [2, 5, 5], "layers": [
            {"type": "conv2d", "name": "a", "padding": [1, 1], "groups": 2},
            {"type": "batch_norm2d", "name": "bn", "eps": 1e-3},
            {"type": "relu6", "id": "r"},
            {"type": "add", "inputs": ["r", "input"], "id": "sum"},
            {"type": "concat", "inputs": ["sum", "r"], "axis": 1},
            {"type": "avg_pool2d", "kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True,
             "count_include_pad": False},
            {"type": "dropout"},
            {"type": "global_avg_pool2d"},
            {"type": "identity"},
            {"type": "flatten", "start_dim": 1},
        ]},
        {"a.weight": weights(2, 1, 3, 3), "bn.weight": weights(2), "bn.bias": weights(2),
         "bn.running_mean": weights(2), "bn.running_var": np.abs(weights(2)) + 0.5},
    ))
    half = weights(4, 3).astype(np.float64)
    write("safetensors_json", "f64_linear.bin", st_json(
        {"format": fmt, "input": [3], "layers": [{"type": "linear", "name": "l"},
                                                 {"type": "softmax", "axis": 1}]},
        {"l.weight": half},
    ))
    models = ROOT / "tests/fixtures/models"
    for name in ["squeezenet", "mobilenet"]:
        arch = json.loads((models / f"{name}.arch.json").read_text())
        data = json.dumps(arch, separators=(",", ":")).encode() + b"\0" + (models / f"{name}.safetensors").read_bytes()
        write("safetensors_json", f"{name}.bin", data)


# ---------- .npy ----------

def npy_bytes(array, version=None):
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array)
    else:
        np.lib.format.write_array(buf, array, version=version)
    return buf.getvalue()


def npy_seeds():
    write("npy", "f32_chw.npy", npy_bytes(weights(3, 4, 5)))
    write("npy", "f64_vector.npy", npy_bytes(rng.standard_normal(7)))
    write("npy", "scalar.npy", npy_bytes(np.float32(2.5)))
    write("npy", "empty.npy", npy_bytes(np.zeros((0, 3), dtype=np.float32)))
    write("npy", "v2.npy", npy_bytes(weights(2, 2), version=(2, 0)))
    write("npy", "v3.npy", npy_bytes(weights(1, 2, 2, 1), version=(3, 0)))
    write("npy", "nan_inf.npy", npy_bytes(np.array([np.nan, np.inf, -np.inf, 0.0], dtype=np.float32)))


# ---------- images ----------

def image_bytes(image, fmt, **kw):
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def image_seeds():
    # The first byte of an image seed is the options byte (see fuzz_targets/image.rs).
    for options, src in [(0, "assets/images/digit-0.png"), (3, "assets/images/digit-7.png"),
                         (0x56, "assets/shapes/shapes-000-disc.png"), (1, "assets/shapes/shapes-001-square-mask.png")]:
        write("image", Path(src).name, bytes([options]) + (ROOT / src).read_bytes())
    pixels = (rng.random((12, 10, 3)) * 255).astype(np.uint8)
    rgb = Image.fromarray(pixels, "RGB")
    write("image", "rgb.jpg", bytes([0]) + image_bytes(rgb, "JPEG", quality=80))
    write("image", "gray_progressive.jpg", bytes([3]) + image_bytes(rgb.convert("L"), "JPEG", progressive=True))
    write("image", "rgba.png", bytes([0]) + image_bytes(rgb.convert("RGBA"), "PNG"))
    write("image", "palette.png", bytes([2]) + image_bytes(rgb.convert("P"), "PNG"))
    gray16 = Image.fromarray((rng.random((5, 6)) * 65535).astype(np.uint16))
    write("image", "gray16.png", bytes([1]) + image_bytes(gray16, "PNG"))
    write("image", "gray_alpha.png", bytes([0]) + image_bytes(rgb.convert("LA"), "PNG"))


if __name__ == "__main__":
    onnx_seeds()
    safetensors_seeds()
    npy_seeds()
    image_seeds()
    sizes = [p.stat().st_size for p in CORPUS.rglob("*") if p.is_file()]
    print(f"{len(sizes)} seeds, {sum(sizes)} bytes, largest {max(sizes)}")
