"""ONNX export (patchfuse_jax.fusing.onnx): ONNX Runtime equals ``fuse``; bad files; the CLI; the
JAX-free deploy example (examples/onnx_runtime_fuse.py)."""

import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from patchfuse_jax import fuse, io, pretrained  # noqa: E402
from patchfuse_jax.__main__ import main  # noqa: E402
from patchfuse_jax.fusing.onnx import (  # noqa: E402
    TRANSPOSE_FORMS,
    OnnxExportError,
    check_onnx,
    export_onnx,
    onnx_model,
    onnx_session,
    read_onnx_metadata,
    run_onnx,
)
from patchfuse_jax.fusing.saved import (  # noqa: E402
    default_weights,
    export_generator,
    make_fuse_params,  # noqa: E402
)
from patchfuse_jax.nn.models import Generator  # noqa: E402
from tests.conftest import REPO  # noqa: E402

EXAMPLE = REPO / "examples" / "onnx_runtime_fuse.py"
TOL = 1e-4  # max abs difference to fuse, on [0, 1]
# Real pairs at three sizes each: the whole image, and two crops (odd sizes; one smaller than
# the padding multiple of the shipped model, 128).
PAIRS = (("roadscene", "FLIR_00006.jpg"), ("tno", "01.png"))
SIZES = (None, (200, 333), (64, 100))


def _tiny_batchnorm(seed: int = 0, ngf: int = 8):
    """A small BatchNorm generator with random weights and running statistics (as trained)."""
    arch = dict(num_downs=3, ngf=ngf, norm="batch", upsample="transpose", input_skip=True, output="residual_average")
    rng = np.random.default_rng(seed)
    v = Generator(**arch).init(jax.random.key(seed), jnp.zeros((1, 8, 8, 2)), train=False)
    v = jax.tree_util.tree_map(lambda a: np.asarray(a) + 0.2 * rng.standard_normal(a.shape), v)
    v = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), v)
    v["batch_stats"] = jax.tree_util.tree_map(lambda a: np.abs(a) + 0.5, v["batch_stats"])
    return make_fuse_params(v, arch, step=11)


def _example():
    spec = importlib.util.spec_from_file_location("onnx_runtime_fuse", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def shipped_onnx(tmp_path_factory):
    if not default_weights().is_file():
        pytest.skip("no default weights shipped (patchfuse_jax/weights/default.msgpack)")
    path = tmp_path_factory.mktemp("onnx") / "shipped.onnx"
    params = pretrained()
    export_onnx(params, path)
    return params, path


def _pairs(shared):
    out = []
    for ds, name in PAIRS:
        root = shared(ds)
        ir, vis = io.read_image(root / "ir" / name), io.read_image(root / "vis" / name)
        for size in SIZES:
            if size is None:
                out.append((f"{ds}/{name} {ir.shape[:2]}", ir, vis))
            else:
                h, w = size
                out.append((f"{ds}/{name} crop {size}", ir[40 : 40 + h, 30 : 30 + w], vis[40 : 40 + h, 30 : 30 + w]))
    return out


def _check_equal(session, params, pairs, bn):
    ex = _example()
    worst = 0.0
    for label, ir, vis in pairs:
        want = fuse(params, ir, vis, bn=bn)
        got = ex.fuse_arrays(session, ir, vis)
        assert got.shape == want.shape, label
        diff = float(np.abs(got - want).max())
        worst = max(worst, diff)
        assert diff <= TOL, (label, bn, diff)
    return worst


@pytest.mark.data
def test_shipped_model_equals_fuse(shared, shipped_onnx):
    params, path = shipped_onnx
    session = onnx_session(path, params, bn="image")
    meta = read_onnx_metadata(path)
    assert meta["pad_multiple"] == str(params.arch.multiple) and meta["bn"] == "none"
    pairs = _pairs(shared)
    worst = _check_equal(session, params, pairs, "image")
    print(f"shipped model: max abs diff {worst:.2e} over {len(pairs)} pairs")
    # Colour: the example's YCbCr recolouring equals fuse(..., color=True).
    label, ir, vis = pairs[0]
    assert vis.ndim == 3 and not np.array_equal(vis[..., 0], vis[..., 1]), label
    want = fuse(params, ir, vis, color=True)
    got = _example().fuse_arrays(session, ir, vis, color=True)
    assert got.shape == want.shape == vis.shape
    assert np.abs(got - want).max() <= TOL


@pytest.mark.data
@pytest.mark.parametrize("bn", ["image", "running"])
def test_batchnorm_model_equals_fuse(shared, tmp_path, bn):
    params = _tiny_batchnorm()
    path = tmp_path / f"bn_{bn}.onnx"
    meta = export_onnx(params, path, bn=bn)
    assert meta["bn"] == bn and meta["pad_multiple"] == "8"
    session = onnx_session(path, params, bn=bn)
    worst = _check_equal(session, params, _pairs(shared), bn)
    print(f"BatchNorm model, bn={bn}: max abs diff {worst:.2e}")
    # The two modes differ (else the test would not tell them apart).
    other = "running" if bn == "image" else "image"
    ir, vis = np.random.default_rng(0).random((2, 1, 24, 40)).astype(np.float32)
    assert np.abs(run_onnx(session, ir, vis, 8) - fuse(params, ir, vis, bn=other)).max() > 1e-2


@pytest.mark.parametrize("bn", ["image", "running"])
def test_fuse_with_the_onnx_runtime_backend_equals_xla(bn):
    """``fuse(..., backend="onnxruntime")``: the same layouts, colour, batches and tiles, the
    generator run by ONNX Runtime; equal to the XLA backend within 1e-5 (float32)."""
    from patchfuse_jax.fusing.api import fuse

    params = _tiny_batchnorm(seed=2)
    rng = np.random.default_rng(3)
    ir, vis = rng.integers(0, 256, (2, 37, 45), dtype=np.uint8), rng.integers(0, 256, (2, 37, 45, 3), dtype=np.uint8)
    for kw in ({}, {"color": True}, {"tile": 16, "overlap": 4}):
        a = fuse(params, ir, vis, bn, backend="onnxruntime", **kw)
        b = fuse(params, ir, vis, bn, **kw)
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-5, kw
    with pytest.raises(ValueError, match="backend='tpu': expected one of xla, onnxruntime"):
        fuse(params, ir, vis, backend="tpu")
    # the video path's session (threads sleep between runs) and fuse_with: the same result
    from patchfuse_jax.fusing import onnx as onnx_export
    from patchfuse_jax.fusing.api import fuse_with
    from patchfuse_jax.fusing.onnx import generator_session

    sleeping = generator_session(params, bn, spin=False)
    assert {key[-1] for key in onnx_export._SESSIONS} == {True, False}  # two sessions, one per setting
    np.testing.assert_array_equal(
        fuse_with(sleeping, params, ir, vis, color=True), fuse(params, ir, vis, bn, backend="onnxruntime", color=True)
    )


def test_batch_dynamic_shapes_and_opsets(tmp_path):
    """Batches of images are each computed on their own (bn='image'), at any padded size; opsets
    17 and 21 and both forms of the transposed convs give fuse's result."""
    params = _tiny_batchnorm(seed=1)
    rng = np.random.default_rng(1)
    for opset, transpose in ((17, "phases"), (21, "native")):
        path = tmp_path / f"m{opset}.onnx"
        export_onnx(params, path, bn="image", opset=opset, transpose=transpose)
        model = onnx.load(path)
        assert model.opset_import[0].version == opset
        ops = {n.op_type for n in model.graph.node}
        native = transpose == "native"
        assert ("ConvTranspose" in ops, "DepthToSpace" in ops) == (native, not native)
        session = onnx_session(path, params, threads=1)
        for shape in ((3, 16, 24), (2, 37, 51)):
            ir, vis = rng.random((2,) + shape).astype(np.float32)
            got = run_onnx(session, ir, vis, 8)
            assert np.abs(got - fuse(params, ir, vis, bn="image")).max() <= TOL
            np.testing.assert_allclose(got[1], run_onnx(session, ir[1:2], vis[1:2], 8)[0], atol=1e-6)
    inp = onnx.load(tmp_path / "m17.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in inp] == ["batch", 2, "height", "width"]
    with pytest.raises(ValueError, match="opset=9"):
        export_onnx(params, tmp_path / "x.onnx", opset=9)
    with pytest.raises(ValueError, match="bn='train'"):
        export_onnx(params, tmp_path / "x.onnx", bn="train")


@pytest.mark.parametrize("input_skip", [False, True])
@pytest.mark.parametrize("output", ["direct", "residual_average"])
@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_every_supported_generator_option_equals_fuse(input_skip, output, upsample):
    """Each generator option the exporter supports, in both transposed-conv forms (the phase form
    computes the outermost level at half size when there is an input skip), equals fuse."""
    arch = dict(num_downs=3, ngf=8, norm="instance", upsample=upsample, input_skip=input_skip, output=output)
    rng = np.random.default_rng(4)
    v = Generator(**arch).init(jax.random.key(4), jnp.zeros((1, 8, 8, 2)), train=False)
    v = jax.tree_util.tree_map(lambda a: np.asarray(a + 0.2 * rng.standard_normal(a.shape), np.float32), v)
    params = make_fuse_params(v, arch, step=3)
    ir, vis = rng.random((2, 2, 29, 43)).astype(np.float32)
    want = fuse(params, ir, vis)
    for transpose in TRANSPOSE_FORMS:
        model = onnx_model(params, transpose=transpose)
        half_size_tail = input_skip and upsample == "transpose" and transpose == "phases"
        assert ("SpaceToDepth" in {n.op_type for n in model.graph.node}) == half_size_tail
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        assert np.abs(run_onnx(session, ir, vis, 8) - want).max() <= TOL, transpose


# --- Bad input -----------------------------------------------------------------------------------


def test_onnx_file_from_another_model_is_refused(tmp_path):
    a, b, wide = _tiny_batchnorm(seed=0), _tiny_batchnorm(seed=5), _tiny_batchnorm(seed=0, ngf=4)
    path = tmp_path / "a.onnx"
    export_onnx(a, path, bn="running")
    assert check_onnx(path, a, bn="running")["step"] == "11"
    cases = (
        (b, None, r"a.onnx: ONNX model holds other weights than the given model"),
        (wide, None, r"a.onnx: ONNX model of another generator architecture: ngf=8 \(expected 4\)"),
        (a, "image", r"a.onnx: ONNX model uses BatchNorm mode 'running', not 'image'"),
    )
    for params, bn, msg in cases:
        with pytest.raises(OnnxExportError, match=msg) as e:
            onnx_session(path, params, bn=bn)
        assert "\n" not in str(e.value)


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    params = _tiny_batchnorm()
    good = tmp_path / "good.onnx"
    export_onnx(params, good)
    data = good.read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.onnx").write_text("not a model\n")
    export_generator(params, tmp_path / "model.msgpack")
    foreign = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    onnx.save(foreign, tmp_path / "foreign.onnx")
    cases = (
        ("truncated.onnx", "not an ONNX model, or the file is truncated/corrupt"),
        ("text.onnx", "not an ONNX model, or the file is truncated/corrupt"),
        ("model.msgpack", "not an ONNX model, or the file is truncated/corrupt"),
        ("foreign.onnx", "an ONNX model, but not a patchfuse_jax generator"),
        ("missing.onnx", "no such ONNX file"),
    )
    for name, msg in cases:
        with pytest.raises(OnnxExportError, match=msg) as e:
            check_onnx(tmp_path / name, params)
        assert str(e.value).startswith(str(tmp_path / name) + ": ") and "\n" not in str(e.value)
    # The JAX-free example: one line naming the file, status 1.
    ir = tmp_path / "ir.png"
    io_img = (np.arange(16 * 24).reshape(16, 24) % 256).astype(np.uint8)
    import imageio.v3 as iio

    iio.imwrite(ir, io_img)
    r = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path / "truncated.onnx"), str(ir), str(ir), str(tmp_path / "o.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"{tmp_path / 'truncated.onnx'}: cannot use this ONNX model")


def test_missing_packages_error_and_lazy_import(monkeypatch, tmp_path):
    code = (
        "import sys, patchfuse_jax, patchfuse_jax.fusing.onnx, patchfuse_jax.__main__; "
        "print(sorted(m for m in ('onnx', 'onnxruntime') if m in sys.modules))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(OnnxExportError, match=r"needs the 'onnx' package: pip install patchfuse_jax\[onnx\]"):
        export_onnx(_tiny_batchnorm(), tmp_path / "m.onnx")


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_export_onnx(tmp_path, capsys):
    params = _tiny_batchnorm()
    export_generator(params, tmp_path / "m.msgpack")
    out = tmp_path / "m.onnx"
    assert (
        main(
            [
                "export",
                "--format=onnx",
                f"--checkpoint={tmp_path / 'm.msgpack'}",
                f"--out={out}",
                "--bn=running",
                "--opset=18",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "wrote" in text and "opset 18, bn=running" in text and "multiples of 8" in text
    meta = check_onnx(out, params, bn="running")
    assert meta["source"] == "m.msgpack"
    for argv, needle in (
        (["export", "--out=x.msgpack"], "required: --workdir"),
        (
            ["export", f"--workdir={tmp_path / 'm.msgpack'}", "--out=x.msgpack", "--bn=image"],
            "--bn and --opset apply to --format=onnx only",
        ),
        (["export", "--format=onnx", f"--out={tmp_path / 'y.onnx'}", "--dtype=float16"], "float32 only"),
        (["export", "--format=onnx", f"--out={tmp_path / 'y.onnx'}", "--step=3"], "--step needs --workdir"),
        (
            ["export", "--format=onnx", f"--out={tmp_path / 'y.onnx'}", f"--workdir={tmp_path / 'nowhere'}"],
            "nowhere: no such workdir",
        ),
    ):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "y.onnx").exists()


def test_cli_export_onnx_shipped_model(tmp_path, capsys):
    if not default_weights().is_file():
        pytest.skip("no default weights shipped (patchfuse_jax/weights/default.msgpack)")
    out = tmp_path / "shipped.onnx"
    assert main(["export", "--format=onnx", f"--out={out}"]) == 0
    assert "of the shipped weights" in capsys.readouterr().out
    assert check_onnx(out, pretrained(), bn="image")["source"] == "pretrained"


# --- The deploy example without JAX --------------------------------------------------------------

# Runs a script with jax, jaxlib, flax and patchfuse_jax unimportable (as in a venv without them).
_NO_JAX = """
import runpy, sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('jax', 'jaxlib', 'flax', 'patchfuse_jax'):
            raise ImportError(f'{name} is blocked in this test (no JAX)')
sys.meta_path.insert(0, _Block())
script = sys.argv[1]
sys.argv = sys.argv[1:]
try:
    runpy.run_path(script, run_name='__main__')
finally:
    assert not [m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')]
"""


def _example_pair(shared, tmp_path):
    root = shared("roadscene")
    ir, vis = io.read_image(root / "ir" / "FLIR_00006.jpg"), io.read_image(root / "vis" / "FLIR_00006.jpg")
    ir, vis = ir[:90, :130], vis[:90, :130]
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "ir.png", ir)
    iio.imwrite(tmp_path / "vis.png", vis)
    return ir, vis


@pytest.mark.data
def test_example_runs_without_jax(shared, tmp_path):
    import imageio.v3 as iio

    params = _tiny_batchnorm()
    export_onnx(params, tmp_path / "m.onnx")
    ir, vis = _example_pair(shared, tmp_path)
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            _NO_JAX,
            str(EXAMPLE),
            str(tmp_path / "m.onnx"),
            str(tmp_path / "ir.png"),
            str(tmp_path / "vis.png"),
            str(tmp_path / "out.png"),
            "--color",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert r.returncode == 0, r.stderr
    got = iio.imread(tmp_path / "out.png").astype(np.int32)
    want = np.round(fuse(params, ir, vis, color=True) * 255).astype(np.int32)
    assert got.shape == want.shape == vis.shape and np.abs(got - want).max() <= 1


@pytest.mark.slow
@pytest.mark.data
def test_example_in_a_venv_without_jax(shared, tmp_path):
    """The issue's done criterion, literally: a fresh venv with numpy, onnxruntime and imageio."""
    import imageio.v3 as iio

    params = _tiny_batchnorm()
    export_onnx(params, tmp_path / "m.onnx")
    ir, vis = _example_pair(shared, tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    pip = subprocess.run(
        [py, "-m", "pip", "install", "-q", "numpy", "onnxruntime", "imageio"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if pip.returncode != 0:
        pytest.skip(f"cannot install numpy/onnxruntime/imageio into a fresh venv: {pip.stderr[-300:]}")
    assert subprocess.run([py, "-c", "import jax"], capture_output=True).returncode != 0
    r = subprocess.run(
        [
            py,
            str(EXAMPLE),
            str(tmp_path / "m.onnx"),
            str(tmp_path / "ir.png"),
            str(tmp_path / "vis.png"),
            str(tmp_path / "out.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    got = iio.imread(tmp_path / "out.png").astype(np.int32)
    assert np.abs(got - np.round(fuse(params, ir, vis) * 255)).max() <= 1
