"""Generator-only checkpoint loading, one-file exports, pretrained() and the package CLI."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import serialization

from patchfuse_jax import fuse, load_checkpoint, pretrained
from patchfuse_jax.__main__ import main
from patchfuse_jax.checkpoint import CheckpointError, Checkpoints
from patchfuse_jax.fusing import saved as export
from patchfuse_jax.fusing.saved import export_generator, make_fuse_params, read_export_metadata
from patchfuse_jax.train.config import Config
from patchfuse_jax.train.state import create_train_state
from tests.conftest import REPO, TINY

CFG = Config(**{**TINY, "ngf": 8, "ndf": 8, "num_steps": 5})


def _noisy(tree, rng):
    """Random float leaves: incompressible, like a trained state (zeros compress away)."""
    return jax.tree_util.tree_map(
        lambda x: (
            (np.asarray(x) + rng.standard_normal(np.shape(x))).astype(np.float32)
            if np.asarray(x).dtype == np.float32
            else x
        ),
        tree,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A workdir with checkpoints at steps 3 and 5 (random weights, statistics, Adam states)."""
    wd = str(tmp_path_factory.mktemp("run"))
    rng = np.random.default_rng(0)
    state = jax.device_get(create_train_state(CFG))
    ckpts = Checkpoints(wd)
    for step in (3, 5):
        nets = {
            name: getattr(state, name).replace(
                params=_noisy(getattr(state, name).params, rng), opt_state=_noisy(getattr(state, name).opt_state, rng)
            )
            for name in ("g", "d_ir", "d_vis")
        }
        g = nets["g"]
        nets["g"] = g.replace(batch_stats=jax.tree_util.tree_map(lambda x: np.abs(_noisy(x, rng)) + 0.5, g.batch_stats))
        ckpts.save(state.replace(step=np.int32(step), **nets), CFG.to_dict())
    ckpts.wait()
    ckpts.close()
    return wd


def _full_state(wd, step):
    ckpts = Checkpoints(wd, read_only=True)
    try:
        return ckpts.restore_raw(step)
    finally:
        ckpts.close()


def _bytes_read():
    import tensorstore as ts

    for m in ts.experimental_collect_matching_metrics("/tensorstore/kvstore/file/bytes_read"):
        return int(m["values"][0]["value"])
    return 0


# --- load_checkpoint: only the generator ----------------------------------------------------------


def test_load_checkpoint_restores_only_the_generator(workdir):
    before = _bytes_read()
    params = load_checkpoint(workdir)
    partial = _bytes_read() - before
    assert params.step == 5 and params.arch.as_dict() == {
        "num_downs": 2,
        "ngf": 8,
        "norm": "batch",
        "upsample": "transpose",
        "input_skip": False,
        "output": "direct",
    }
    assert params.config == CFG.to_dict() | {"crop_size": [32, 32], "synthetic_size": [40, 48]}
    full = _full_state(workdir, 5)
    got = jax.tree_util.tree_map(np.asarray, params.variables)
    want = {"params": full["g"]["params"], "batch_stats": full["g"]["batch_stats"]}
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)
    # Genuinely a partial read: G's weights are ~1/3 of G + Adam(G) + 2 x (D + Adam(D)).
    before = _bytes_read()
    _full_state(workdir, 5)
    everything = _bytes_read() - before
    if everything == 0:
        pytest.skip("tensorstore does not report bytes read")
    assert partial < 0.5 * everything, (partial, everything)
    assert load_checkpoint(workdir, step=3).step == 3


def test_load_checkpoint_errors_name_the_problem(workdir, tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint for step 4; it has steps 3, 5"):
        load_checkpoint(workdir, step=4)
    with pytest.raises(CheckpointError, match="no such workdir or exported file"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no checkpoints folder"):
        load_checkpoint(tmp_path)
    not_export = tmp_path / "notes.txt"
    not_export.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes.txt: not a patchfuse_jax export"):
        load_checkpoint(not_export)


def _copy(workdir, dst):
    import shutil

    shutil.copytree(workdir, dst)
    return dst


def test_half_written_and_corrupt_checkpoints(workdir, tmp_path):
    # A crash while saving leaves orbax's temporary folder: ignored, and named when asked for.
    wd = _copy(workdir, tmp_path / "half")
    os.rename(wd / "checkpoints" / "5", wd / "checkpoints" / "5.orbax-checkpoint-tmp-1234")
    assert load_checkpoint(wd).step == 3
    with pytest.raises(CheckpointError, match=r"step 5 \(only the unfinished, half-written 5\.orbax"):
        load_checkpoint(wd, step=5)
    # Array data missing.
    wd = _copy(workdir, tmp_path / "nodata")
    for root, _, files in os.walk(wd / "checkpoints" / "5" / "state"):
        for f in files:
            if os.path.basename(root) == "d":
                os.remove(os.path.join(root, f))
    with pytest.raises(CheckpointError, match=r"checkpoint at step 5 .* is corrupt or incomplete"):
        load_checkpoint(wd, step=5)
    with pytest.warns(UserWarning, match="checkpoint at step 5 is damaged; loaded step 3"):
        assert load_checkpoint(wd).step == 3  # the latest is damaged: the newest readable one
    # Truncated tree metadata.
    wd = _copy(workdir, tmp_path / "meta")
    meta = wd / "checkpoints" / "5" / "state" / "_METADATA"
    meta.write_bytes(meta.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"step 5 .* is corrupt or incomplete") as e:
        load_checkpoint(wd, step=5)
    assert "\n" not in str(e.value)
    # Missing config.
    wd = _copy(workdir, tmp_path / "noconfig")
    os.remove(wd / "checkpoints" / "5" / "config" / "metadata")
    with pytest.raises(CheckpointError, match="cannot read its config"):
        load_checkpoint(wd, step=5)


# --- export --------------------------------------------------------------------------------------


def test_export_roundtrip(workdir, tmp_path):
    out = tmp_path / "sub" / "model.msgpack"
    meta = export_generator(workdir, out)
    assert out.is_file() and meta["bytes"] == out.stat().st_size
    assert not [p for p in os.listdir(out.parent) if p != "model.msgpack"]  # no temporary left
    ckpt_bytes = sum(
        os.path.getsize(os.path.join(r, f))
        for r, _, fs in os.walk(os.path.join(workdir, "checkpoints", "5"))
        for f in fs
    )
    assert meta["bytes"] < 0.5 * ckpt_bytes
    assert (meta["format"], meta["format_version"], meta["step"], meta["dtype"]) == (
        "patchfuse_jax.generator",
        1,
        5,
        "float32",
    )
    assert meta["config"] == load_checkpoint(workdir).config
    assert read_export_metadata(out) == {k: v for k, v in meta.items() if k != "bytes"}

    a, b = load_checkpoint(workdir), load_checkpoint(out)
    assert (b.arch, b.step, b.config) == (a.arch, a.step, a.config)
    for x, y in zip(jax.tree_util.tree_leaves(a.variables), jax.tree_util.tree_leaves(b.variables)):
        assert y.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    rng = np.random.default_rng(0)
    ir, vis = rng.random((19, 23)), rng.random((19, 23, 3))
    np.testing.assert_array_equal(fuse(a, ir, vis), fuse(b, ir, vis))
    assert load_checkpoint(out, step=5).step == 5
    with pytest.raises(CheckpointError, match="holds step 5 only, not step 3"):
        load_checkpoint(out, step=3)

    # An older step, stored as float16: half the weights' bytes, loaded back as float32.
    out16 = tmp_path / "m16.msgpack"
    meta16 = export_generator(workdir, out16, step=3, dtype="float16")
    assert meta16["step"] == 3 and meta16["bytes"] < 0.6 * meta["bytes"]
    c, d = load_checkpoint(workdir, step=3), load_checkpoint(out16)
    for x, y in zip(jax.tree_util.tree_leaves(c.variables), jax.tree_util.tree_leaves(d.variables)):
        assert y.dtype == np.float32
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=1e-4)


def test_export_from_fuse_params_and_re_export(tmp_path):
    import jax.numpy as jnp

    from patchfuse_jax.nn.models import Generator

    arch = dict(num_downs=2, ngf=4, norm="instance")
    variables = Generator(**arch).init(jax.random.key(1), jnp.zeros((1, 8, 8, 2)), train=False)
    params = make_fuse_params(variables, arch, step=7)
    export_generator(params, tmp_path / "a.msgpack")
    back = pretrained(path=tmp_path / "a.msgpack")
    assert (back.step, back.arch.norm, back.variables["batch_stats"]) == (7, "instance", {})
    # An export can be exported again (e.g. to float16).
    meta = export_generator(tmp_path / "a.msgpack", tmp_path / "b.msgpack", dtype="float16")
    assert (meta["step"], meta["source"], meta["arch"]["norm"]) == (7, "a.msgpack", "instance")
    with pytest.raises(CheckpointError, match="is a directory"):
        export_generator(params, tmp_path)


def _rewrite(src, dst, **changes):
    doc = serialization.msgpack_restore(src.read_bytes())
    doc.update(changes)
    dst.write_bytes(serialization.msgpack_serialize(doc))
    return dst


def test_bad_export_files_have_clear_errors(workdir, tmp_path):
    good = tmp_path / "good.msgpack"
    export_generator(workdir, good)
    data = good.read_bytes()

    truncated = tmp_path / "truncated.msgpack"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated.msgpack: .*truncated/corrupt") as e:
        load_checkpoint(truncated)
    assert "\n" not in str(e.value)

    blob = serialization.msgpack_restore(data)["variables"]
    flipped = bytearray(data)
    flipped[data.find(blob) + len(blob) // 2] ^= 0xFF  # one bit flip inside the weights
    (tmp_path / "flipped.msgpack").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt .*checksum"):
        load_checkpoint(tmp_path / "flipped.msgpack")

    wrong = _rewrite(
        good, tmp_path / "wrong.msgpack", arch={"num_downs": 2, "ngf": 16, "norm": "batch", "upsample": "transpose"}
    )
    with pytest.raises(
        CheckpointError,
        match=r"wrong.msgpack: weights do not fit the generator "
        r"architecture \(.*ngf=16, .*has shape",
    ):
        load_checkpoint(wrong)

    newer = _rewrite(good, tmp_path / "newer.msgpack", format_version=99)
    with pytest.raises(CheckpointError, match="version 99 is newer"):
        load_checkpoint(newer)
    unknown = _rewrite(
        good, tmp_path / "unknown.msgpack", arch={"num_downs": 2, "ngf": 8, "norm": "batch", "attention": True}
    )
    with pytest.raises(CheckpointError, match="does not know \\(attention\\)"):
        load_checkpoint(unknown)
    other = tmp_path / "other.msgpack"
    other.write_bytes(serialization.msgpack_serialize({"params": {"w": np.zeros(3)}}))
    with pytest.raises(CheckpointError, match="other.msgpack: not a patchfuse_jax export"):
        load_checkpoint(other)


# --- pretrained() ---------------------------------------------------------------------------------


def test_pretrained_without_shipped_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(export, "default_weights", lambda v=None: tmp_path / "weights" / "default.msgpack")
    with pytest.raises(CheckpointError, match="no such weights are shipped in this install"):
        pretrained()


def test_pretrained_reads_the_package_resource(monkeypatch, workdir, tmp_path):
    # The real location: the package's weights/ folder, found through importlib.resources.
    assert str(export.default_weights()).endswith(os.path.join("patchfuse_jax", "weights", "default.msgpack"))
    res = tmp_path / "weights" / "default.msgpack"
    export_generator(workdir, res)
    monkeypatch.setattr(export, "default_weights", lambda v=None: res)
    params = pretrained()
    assert params.step == 5 and params.arch.ngf == 8


def test_shipped_default_weights_fuse_a_pair():
    if not export.default_weights().is_file():
        pytest.skip("no default weights shipped (patchfuse_jax/weights/default.msgpack)")
    params = pretrained()
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    vis = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    for bn in ("running", "image"):
        out = fuse(params, ir, vis, bn=bn)
        assert out.shape == (40, 56) and out.dtype == np.float32
        assert np.isfinite(out).all() and 0.0 <= out.min() and out.max() <= 1.0


# --- the CLI --------------------------------------------------------------------------------------


def test_cli_export(workdir, tmp_path, capsys):
    out = tmp_path / "cli.msgpack"
    assert main(["export", f"--workdir={workdir}", f"--out={out}", "--step=3"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load_checkpoint(out).step == 3

    assert main(["export", f"--workdir={workdir}", f"--out={out}", "--step=4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("patchfuse export: error: ") and "steps 3, 5" in err

    for argv, needle in (
        (["export", f"--workdir={workdir}"], "--out"),
        ([], "choose a command: export"),
        (["frobnicate"], "invalid choice"),
        (["export", f"--workdir={workdir}", f"--out={out}", "--step=x"], "--step"),
    ):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err and "Traceback" not in err, (argv, err)


def test_python_m_patchfuse_jax(workdir, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = lambda *args: subprocess.run(
        [sys.executable, "-m", "patchfuse_jax", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    r = run("export", "--workdir", str(workdir), "--out", str(tmp_path / "m.msgpack"))
    assert r.returncode == 0, r.stderr
    assert read_export_metadata(tmp_path / "m.msgpack")["step"] == 5
    assert "wrote" in r.stdout and r.stderr == ""  # orbax's absl warnings are kept quiet
    r = run("export", "--workdir", str(workdir), "--out", str(tmp_path / "x.msgpack"), "--step=4")
    assert r.returncode == 1 and not (tmp_path / "x.msgpack").exists()
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("patchfuse export: error: "), r.stderr
    assert "no checkpoint for step 4" in r.stderr


def test_pretrained_v1_is_the_earlier_shipped_model():
    from patchfuse_jax.fusing.saved import default_weights, pretrained

    if not default_weights("v1").is_file():
        pytest.skip("this install ships no v1 weights")
    v1 = pretrained("v1")
    assert v1.step == 750 and v1.config.get("detail_weight") == 45  # trial F2, docs/MODEL.md
    ir, vis = np.random.default_rng(3).random((2, 48, 64)).astype(np.float32)
    out = fuse(v1, ir, vis)
    assert out.shape == (48, 64) and np.isfinite(out).all()
