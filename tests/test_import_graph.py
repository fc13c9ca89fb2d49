"""scripts/import_graph.py: module cycles, layer order and the generated section of docs/design.md."""

import importlib.util
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "import_graph.py"
_spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
ig = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ig)

LAYERS = [("io",), ("core",), ("nn",), ("fusing",), ("__main__",)]
CLEAN = {
    "__init__.py": '__version__ = "0"\n_LAZY = {"fuse": "fusing.api", "Dense": "nn.layers"}\n',
    "io.py": "import os\n",
    "core.py": "from . import io\nfrom patchfuse_jax.io import os\n",
    "nn/__init__.py": "from .layers import Dense\n",
    "nn/layers.py": "from .. import io\nfrom patchfuse_jax import core, __version__\nDense = 1\n",
    "nn/deep/__init__.py": "",
    "nn/deep/block.py": "from ...core import io\nimport patchfuse_jax\n",
    "fusing/__init__.py": "",
    "fusing/api.py": "import patchfuse_jax.nn.layers\nfrom patchfuse_jax.nn import Dense\nfuse = 1\n",
    "fusing/folder.py": "from patchfuse_jax.io import os\n",
    "__main__.py": "def main():\n    from patchfuse_jax import fuse, Dense\n    from .fusing import folder\n",
}


def make_package(tmp_path, changes=None):
    """The CLEAN package under tmp_path/patchfuse_jax, with the files of ``changes`` replaced or added."""
    pkg = tmp_path / "patchfuse_jax"
    for name, text in {**CLEAN, **(changes or {})}.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(textwrap.dedent(text))
    return pkg


def problems(pkg):
    return ig.check(ig.analyse(pkg), LAYERS)


def test_clean_package_resolves_every_import_form(tmp_path):
    g = ig.analyse(make_package(tmp_path))
    assert ig.check(g, LAYERS) == []
    assert {
        "io",
        "core",
        "nn",
        "nn.layers",
        "nn.deep",
        "nn.deep.block",
        "fusing",
        "fusing.api",
        "fusing.folder",
        "__main__",
        "__init__",
    } == set(g.modules)
    edges = set(g.edges)
    assert {
        ("core", "io"),
        ("nn", "nn.layers"),
        ("nn.layers", "io"),
        ("nn.layers", "core"),
        ("nn.layers", "__init__"),
        ("nn.deep.block", "core"),
        ("nn.deep.block", "__init__"),
        ("fusing.api", "nn.layers"),
        ("fusing.api", "nn"),
        ("fusing.folder", "io"),
        ("__main__", "fusing.api"),
        ("__main__", "nn.layers"),
        ("__main__", "fusing.folder"),
    } == edges
    assert g.edges[("__main__", "fusing.api")] == ("__main__.py:2", True)  # a lazy name, imported locally


def test_finds_a_cycle_through_a_function_local_import(tmp_path):
    local = "from . import io\ndef f():\n    from patchfuse_jax.nn import layers\n"
    found = problems(make_package(tmp_path, {"core.py": local}))
    cycles = [p for p in found if p.startswith("import cycle:")]
    assert cycles == ["import cycle: core -> nn.layers [core.py:3, in a function] -> core [nn/layers.py:2]"]
    assert "upward import: core.py:3 (in a function): core (core, layer 1) imports nn.layers (nn, layer 2)" in found


def test_finds_a_top_level_cycle_inside_a_unit(tmp_path):
    pkg = make_package(
        tmp_path, {"fusing/folder.py": "from . import api\n", "fusing/api.py": "from .folder import x\nfuse = 1\n"}
    )
    assert problems(pkg) == [
        "import cycle: fusing.api -> fusing.folder [fusing/api.py:1] -> fusing.api [fusing/folder.py:1]"
    ]


def test_finds_an_upward_import_and_an_unlisted_unit(tmp_path):
    up = "from .. import io\nfrom patchfuse_jax.fusing.folder import os\n"
    pkg = make_package(tmp_path, {"nn/layers.py": up, "extra.py": "from patchfuse_jax import io\n"})
    assert problems(pkg) == [
        "upward import: nn/layers.py:2: nn.layers (nn, layer 2) imports fusing.folder (fusing, layer 3)",
        "unit not in LAYERS: extra",
    ]


def test_finds_missing_modules_and_lazy_names_that_are_modules(tmp_path):
    lazy = '_LAZY = {"fusing": "fusing.api", "old": "gone"}\n'
    gone = "from patchfuse_jax.gone import x\n"
    found = problems(make_package(tmp_path, {"__init__.py": lazy, "io.py": gone}))
    assert "lazy name: __init__.py: _LAZY['old'] = 'gone' is no module of the package" in found
    assert any(p.startswith("lazy name: __init__.py: 'fusing' is also the module patchfuse_jax.fusing") for p in found)
    assert "unresolved import: io.py:1: `from patchfuse_jax.gone import x`: no module patchfuse_jax.gone" in found


def test_docs_section_is_written_replaced_and_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ig, "LAYERS", LAYERS)
    pkg, md = make_package(tmp_path), tmp_path / "design.md"
    md.write_text("# Design\n\nText.\n")
    assert ig.main(["--package", str(pkg), "--check-docs", str(md)]) == 1  # no section yet
    assert "stale docs" in capsys.readouterr().err
    assert ig.main(["--package", str(pkg), "--write-docs", str(md)]) == 0
    text = md.read_text()
    assert text.startswith("# Design\n\nText.\n\n## Import graph (generated)\n\n<!-- import-graph:begin -->")
    assert "python scripts/import_graph.py --write-docs docs/design.md" in text and "graph TD" in text
    assert '    u_io["io"]' in text and "    u_nn --> u_core" in text and "u___init__ -.-> u_fusing" in text
    assert "| 2 | `nn` | `nn/__init__.py`, `nn/deep/__init__.py`, `nn/deep/block.py`, `nn/layers.py` |" in text
    assert "| exempt | `__init__` | `__init__.py` |" in text
    assert ig.main(["--package", str(pkg), "--check-docs", str(md)]) == 0
    md.write_text(text + "\n## Later\n")  # text after the section stays where it is
    (pkg / "fusing" / "folder.py").write_text("from patchfuse_jax.core import io\n")
    assert ig.main(["--package", str(pkg), "--check-docs", str(md)]) == 1  # a new edge: stale
    assert ig.main(["--package", str(pkg), "--write-docs", str(md)]) == 0
    new = md.read_text()
    assert new.count("<!-- import-graph:begin -->") == 1
    assert new.endswith("<!-- import-graph:end -->\n\n## Later\n")
    assert "    u_fusing --> u_core" in new


def test_problems_exit_1_one_line_each(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ig, "LAYERS", LAYERS)
    pkg = make_package(tmp_path, {"io.py": "def f():\n    import patchfuse_jax.core\n"})
    assert ig.main(["--package", str(pkg)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "import cycle: core -> io [core.py:1] -> core [io.py:2, in a function]",
        "upward import: io.py:2 (in a function): io (io, layer 0) imports core (core, layer 1)",
    ]


def test_the_package_is_layered_and_its_docs_are_current():
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--check-docs", "docs/design.md"], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
