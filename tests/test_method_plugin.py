"""A method from an installed package, following docs/adding-a-method.md: a throwaway package with a
`kdstudio.methods` entry point is pip-installed into a temporary folder, and its method is listed and
trained from the CLI and launched from the New-experiment page, with no edit to this repository."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_app_support import (
    app,
    no_exception,
    no_local_worker,  # noqa: F401 - autouse: no real worker
)

from kdcore.jobs import RunStore
from kdcore.methods import registry

ROOT = Path(__file__).resolve().parents[1]

# The method module, written as the guide shows: parameters, taps, a loss, one decorator.
METHOD_MODULE = '''
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from kdcore.methods import EMBEDDING, Batch, BuildContext, MethodLoss, MethodParams, Needs, Tap, layer_field
from kdcore.methods import register_method


class CosineRelationParams(MethodParams):
    method: Literal["cosine_relation"] = "cosine_relation"
    weight: float = Field(3.0, ge=0, le=1000, title="Weight", description="weight of the relation term")
    student_layer: str = layer_field("student", EMBEDDING)


@register_method("cosine_relation", family="relation", params=CosineRelationParams, title="Cosine relation",
                 paper="A throwaway test method, 2026", description="Match the batch's cosine-similarity matrices.",
                 needs=Needs(embedding=True))
class CosineRelation(MethodLoss):
    def __init__(self, p: CosineRelationParams, ctx: BuildContext):
        super().__init__()
        self.p = p
        self.taps = (Tap("teacher", EMBEDDING), Tap("student", p.student_layer))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))  # state: saved with the run

    def forward(self, batch: Batch):
        self.calls += 1
        t = F.normalize(batch.teacher(EMBEDDING).flatten(1), dim=1)
        s = F.normalize(batch.student(self.p.student_layer).flatten(1), dim=1)
        return {"cosine": self.p.weight * (s @ s.t() - t @ t.t()).pow(2).mean()}
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "my-kd-method"
version = "0.1"

[project.entry-points."kdstudio.methods"]
cosine_relation = "my_kd_method"
broken = "my_kd_method.broken"
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package, pip-installed (no index, no dependencies) into a folder of its own."""
    src = tmp_path_factory.mktemp("my-kd-method")
    (src / "my_kd_method").mkdir()
    (src / "my_kd_method" / "__init__.py").write_text(textwrap.dedent(METHOD_MODULE))
    (src / "my_kd_method" / "broken.py").write_text("import a_module_that_is_not_installed\n")
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    site = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "--target", str(site), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert any(site.glob("my_kd_method-0.1.dist-info/entry_points.txt"))
    return site


def cli(site: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    return subprocess.run([sys.executable, "-m", "kdcore", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


@pytest.mark.slow
def test_the_installed_method_is_listed_and_trains_from_the_cli(installed, tmp_path):
    listed = cli(installed, "methods", "--json")
    assert listed.returncode == 0, listed.stderr
    methods = {m["name"]: m for m in json.loads(listed.stdout)["methods"]}
    record = methods["cosine_relation"]
    assert record["family"] == "relation" and record["origin"] == "my_kd_method" and record["slot"] == "losses"
    assert {p["name"]: p["default"] for p in record["parameters"]} == {"weight": 3.0, "student_layer": "@embedding"}
    assert "kd" in methods  # the built-ins are still there
    # a package that fails to import is reported in one sentence and takes nothing else down
    problems = json.loads(listed.stdout)["problems"]
    assert len(problems) == 1 and "'broken'" in problems[0] and "No module named" in problems[0]

    spec = tmp_path / "plugin.yaml"
    spec.write_text(textwrap.dedent(f"""
        name: plugin method
        dataset: {{name: digits}}
        student: mlp_64
        teacher: {{source: checkpoint, checkpoint: {ROOT / 'kdcore/assets/teacher_digits.pt'}}}
        losses:
          - {{method: cosine_relation, weight: 5.0}}
        epochs: 1
        batch_size: 256
        probe_size: 0
        device: cpu
    """))
    trained = cli(installed, "train", str(spec), "--out", str(tmp_path / "out"), "--quiet")
    assert trained.returncode == 0, trained.stderr
    checkpoint = torch.load(tmp_path / "out" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert int(checkpoint["methods"]["0.calls"]) == checkpoint["step"] > 0  # the method ran at every step
    assert checkpoint["spec"]["losses"] == [{"method": "cosine_relation", "weight": 5.0,
                                             "student_layer": "@embedding"}]

    # without the package the same spec fails in one sentence naming the known methods
    missing = cli(tmp_path / "nowhere", "train", str(spec), "--out", str(tmp_path / "out2"), "--quiet")
    assert missing.returncode == 2
    assert "unknown method 'cosine_relation'; choose one of:" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.fixture()
def plugin_in_this_process(installed, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    importlib.invalidate_caches()
    registry.load_methods(reload_plugins=True)
    yield
    registry._records.pop("cosine_relation", None)
    sys.modules.pop("my_kd_method", None)


def test_the_installed_method_is_offered_and_launched_from_the_form(kd_home, plugin_in_this_process):
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("zoo").run()
    at.button(key="add_loss").click().run()
    no_exception(at)
    at.selectbox(key="loss_0_method").set_value("cosine_relation").run()
    weight = at.number_input(key="loss_0.cosine_relation.weight")
    assert weight.value == 3.0 and weight.help == "weight of the relation term"
    weight.set_value(7.0).run()
    no_exception(at)
    assert "Cosine relation" in "".join(m.value for m in at.caption)
    at.button(key="launch").click().run()
    no_exception(at)
    students = [r for r in RunStore().list_runs() if r.spec.teacher is not None]
    assert len(students) == 1
    assert [p.model_dump() for p in students[0].spec.losses] == [
        {"method": "cosine_relation", "weight": 7.0, "student_layer": "@embedding"}]
    assert students[0].method_label == "Cosine relation + KD ρ=4"
