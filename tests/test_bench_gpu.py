"""bench/gpu.py (the prepared GPU benchmark): its --cpu_smoke run prints valid JSON lines with every
measurement, and the helpers cope with what XLA's cost analysis may return."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA

SCRIPT = REPO / "bench" / "gpu.py"


def _run(*args, timeout=600):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


def _lines(stdout):
    return [json.loads(ln) for ln in stdout.splitlines() if ln.strip()]  # every line is JSON


def _positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def gpu_module():
    spec = importlib.util.spec_from_file_location("bench_gpu_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_step_flops_handles_dict_list_and_missing(gpu_module):
    class C:
        def __init__(self, ca):
            self.ca = ca

        def cost_analysis(self):
            if isinstance(self.ca, Exception):
                raise self.ca
            return self.ca

    f = gpu_module.step_flops
    assert f(C({"flops": 12.0, "bytes accessed": 3.0})) == 12.0
    assert f(C([{"flops": 2.0}, {"flops": 3.0}])) == 5.0
    assert f(C([])) is None and f(C(None)) is None and f(C({"bytes accessed": 1.0})) is None
    assert f(C(NotImplementedError("no cost analysis"))) is None
    assert gpu_module._finite({"a": float("nan"), "b": [1.0, float("inf")]}) == {"a": None, "b": [1.0, None]}


def test_full_run_without_gpu_stops_with_an_error_line():
    r = _run(timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = _lines(r.stdout)
    assert lines[0]["measurement"] == "env" and lines[0]["backend"] == "cpu"
    assert lines[-1]["summary"] is True and "--cpu_smoke" in lines[-1]["error"]


@pytest.mark.slow  # about 40 s of CPU time (4 training-step compiles), 80 s wall on a busy 2-core box
def test_cpu_smoke_prints_every_measurement(tmp_path):
    out = tmp_path / "gpu.jsonl"
    roadscene = SHARED_DATA / "roadscene"
    r = _run("--cpu_smoke", f"--out={out}", f"--data_dir={roadscene}", "--budget_s=1000")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = _lines(r.stdout)
    assert _lines(out.read_text()) == lines
    by_kind = {}
    for ln in lines:
        by_kind.setdefault(ln["measurement"], []).append(ln)
        assert not ln.get("error") and not ln.get("skipped"), ln

    env = by_kind["env"][0]
    assert env["jax_version"] and env["backend"] == "cpu" and env["device_kind"]

    mm = {ln["name"]: ln for ln in by_kind["matmul"]}
    assert set(mm) == {"matmul/bfloat16", "matmul/float32", "matmul/float32_highest"}
    assert all(_positive(m["tflops"]) and _positive(m["ms"]) for m in mm.values())

    steps = {(s["batch"], s["dtype"]): s for s in by_kind["train_step"]}
    assert set(steps) == {(b, d) for b in (1, 2) for d in ("float32", "bfloat16")}
    for (b, d), s in steps.items():
        assert s["d_arch"] == "paper65" and s["norm"] == "batch" and s["crop"] == [64, 128]
        for k in (
            "compile_s",
            "ms_per_step",
            "pipelined_ms_per_step",
            "steps_per_s",
            "images_per_s",
            "flops_per_step",
            "achieved_tflops",
            "matmul_tflops",
            "pct_of_matmul_peak",
        ):
            assert _positive(s[k]), (k, s)
        assert s["images_per_s"] == pytest.approx(b * s["steps_per_s"])
        assert s["matmul_tflops"] == mm[f"matmul/{d}"]["tflops"]
        assert s["loss_g_finite"] is True
    assert steps[(2, "float32")]["flops_per_step"] > steps[(1, "float32")]["flops_per_step"]

    fuses = {f["batch"]: f for f in by_kind["fuse"]}
    assert set(fuses) == {1, 2}
    for b, f in fuses.items():
        assert _positive(f["images_per_s"]) and f["out_shape"] == [b, *f["hw"]] and f["out_finite"]

    pipes = {p["batch"]: p for p in by_kind["input_pipeline"]}
    assert set(pipes) == {1, 2}
    for b, p in pipes.items():
        assert p["step_rate_steps_per_s"] == pytest.approx(
            max(steps[(b, d)]["steps_per_s"] for d in ("float32", "bfloat16"))
        )
        if roadscene.is_dir():
            assert _positive(p["batches_per_s"]) and isinstance(p["bottleneck"], bool)
            assert p["bottleneck"] == (p["batches_per_s"] < p["step_rate_steps_per_s"])
        else:
            assert p["batches_per_s"] is None and p["bottleneck"] is None and "not found" in p["reason"]

    summary = lines[-1]
    assert by_kind["summary"] == [summary] and summary["summary"] is True
    assert summary["errors"] == [] and summary["skipped"] == []
    assert summary["backend"] == "cpu" and summary["jax_version"] == env["jax_version"]
    assert summary["compile_s_paper_step"] == steps[(1, "float32")]["compile_s"]
    assert len(summary["train_step"]) == 4 and len(summary["fuse"]) == 2 and len(summary["input_pipeline"]) == 2
    assert set(summary["matmul_tflops"]) == {"bfloat16", "float32", "float32_highest"}


def test_pipeline_without_data_reports_null_with_reason(gpu_module, tmp_path):
    r = gpu_module.pipeline_rate(gpu_module.SMOKE, 1, str(tmp_path / "nowhere"), "", step_rate=3.0)
    assert r["batches_per_s"] is None and r["bottleneck"] is None and "not found" in r["reason"]
    assert r["step_rate_steps_per_s"] == 3.0
