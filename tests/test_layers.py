"""Imports run one way: every module of ``src/videomem`` imports only its own layer and those below.

The layers, lowest first:

    videomem (the package root: version, config path; imports nothing of the project)
    data    <- model <- memory <- rl <- eval <- train <- entry points (cli, export, run_*)

- ``data`` reads shards and videos and knows nothing of models;
- ``model`` wraps the VLM (it may use the synthetic vocabulary from ``data``);
- ``memory`` is the clip-by-clip engine (prompt, parser, loop) and knows nothing of rewards;
- ``rl`` holds PRPO's pieces (rewards, advantages, rollouts, losses) and never the trainer;
  ``teacher`` (the chain-of-memory teachers that fill shards with memories) shares its level;
- ``eval`` measures a policy with the memory loop (metrics, benchmarks, evaluation);
- ``train`` sits above ``eval``: the Lightning modules validate with the evaluation's metrics, and
  evaluation never imports training;
- entry points are thin and may import anything.

A module may import its own layer and any layer below it. The check parses every file with ``ast``
(imports inside functions count too) and imports nothing. A module outside the table fails until it
is given a layer here.

The same pass holds the project to one rank / world-size lookup: only ``data/distributed.py`` calls
``torch.distributed.get_world_size`` / ``get_rank`` (``eval/metrics.py`` asks the size of the
metric's own process group when it merges discovered categories).
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterable
from pathlib import Path

import videomem

PACKAGE = Path(videomem.__file__).resolve().parent

ROOT = "videomem"
#: Layer of each subpackage and top-level module; a higher layer may import a lower one, never back.
LAYERS: dict[str, int] = {
    ROOT: 0,
    "data": 1,
    "model": 2,
    "memory": 3,
    "rl": 4,
    "teacher": 4,  # the chain-of-memory teachers: data, model and memory below, nothing above
    "eval": 5,
    "train": 6,
    "cli": 7,
    "export": 7,
    "run_sft": 7,
    "run_prpo": 7,
    "run_eval": 7,
    "run_memories": 7,
    "config_check": 7,  # the start-up check of a run's settings, called by the entry points
    "rehearsal": 7,  # make rehearse: runs the entry points on a simulated cluster
}
#: Files allowed to ask torch.distributed for a rank or a world size.
WORLD_SIZE_LOOKUPS = {"data/distributed.py", "eval/metrics.py"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``.../videomem/rl/loss.py`` -> ``videomem.rl.loss`` (``__init__`` names its package)."""
    parts = list(path.relative_to(package).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([ROOT, *parts])


def layer_name(module: str) -> str:
    """The layer key of a project module: ``videomem.rl.loss`` -> ``rl``, ``videomem`` -> ``videomem``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def imported_modules(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) of every project module that ``path`` imports, anywhere in the file."""
    module = module_name(path, package)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == ROOT:  # ``from videomem import train`` imports the subpackage
                found += [(node.lineno, f"{ROOT}.{a.name}" if a.name in LAYERS else ROOT) for a in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == ROOT or name.startswith(ROOT + ".")]


def module_name_of(file: str) -> str:
    """``rl/loss.py`` (relative to the package) -> ``videomem.rl.loss``."""
    return module_name(PACKAGE / file)


def back_imports(edges: Iterable[tuple[str, int, str]]) -> list[str]:
    """Messages for every (file, line, imported module) edge that runs up the layers or has no layer."""
    errors = []
    for file, line, target in edges:
        src, dst = layer_name(module_name_of(file)), layer_name(target)
        for name in (src, dst):
            if name not in LAYERS:
                errors.append(
                    f"{file}:{line}: {name!r} has no layer: add it to LAYERS in {Path(__file__).name}"
                )
        if src in LAYERS and dst in LAYERS and LAYERS[dst] > LAYERS[src]:
            errors.append(f"{file}:{line}: imports {target} ({dst}), a layer above {src}")
    return errors


def project_edges(package: Path = PACKAGE) -> list[tuple[str, int, str]]:
    """(file relative to the package, line, imported project module) for every file of the package."""
    return [
        (path.relative_to(package).as_posix(), line, target)
        for path in sorted(package.rglob("*.py"))
        for line, target in imported_modules(path, package)
    ]


def world_size_lookups(package: Path = PACKAGE) -> list[str]:
    """``file:line`` of every call of ``get_world_size`` / ``get_rank`` outside ``WORLD_SIZE_LOOKUPS``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        file = path.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute | ast.Name)
                and getattr(node.func, "attr", getattr(node.func, "id", None))
                in ("get_world_size", "get_rank")
                and file not in WORLD_SIZE_LOOKUPS
            ):
                found.append(f"{file}:{node.lineno}")
    return found


def test_imports_run_one_way():
    errors = back_imports(project_edges())
    assert not errors, "imports that run back up the layers:\n" + "\n".join(errors)


def test_every_layer_is_seen():
    """The scan does see the package: each layer has files and some cross-layer imports."""
    edges = project_edges()
    assert {layer_name(module_name_of(f)) for f, _, _ in edges} >= {
        "data",
        "model",
        "memory",
        "rl",
        "eval",
        "train",
    }
    assert ("train/validation.py", "videomem.eval.metrics") in {(f, t) for f, _, t in edges}


def test_one_world_size_lookup():
    found = world_size_lookups()
    assert not found, f"ask videomem.data.distributed.rank_and_world instead: {found}"


def test_the_checker_names_a_back_import_and_an_unknown_layer():
    edges = [
        ("eval/evaluate.py", 18, "videomem.train.validation"),  # eval -> train: back up
        ("train/validation.py", 19, "videomem.eval.metrics"),  # train -> eval: down
        ("data/datamodule.py", 3, "videomem"),  # the root is below everything
        ("rl/rollout.py", 24, "videomem.memory.loop"),
        ("memory/loop.py", 7, "videomem.rl.rewards"),  # memory -> rl: back up
        ("plugins.py", 1, "videomem.data.types"),  # a module without a layer
    ]
    errors = back_imports(edges)
    assert errors == [
        "eval/evaluate.py:18: imports videomem.train.validation (train), a layer above eval",
        "memory/loop.py:7: imports videomem.rl.rewards (rl), a layer above memory",
        f"plugins.py:1: 'plugins' has no layer: add it to LAYERS in {Path(__file__).name}",
    ]


def test_a_back_import_in_a_copy_of_the_package_fails(tmp_path):
    """A real file with a deliberate back-import (and a relative one) is caught by the same scan."""
    copy = tmp_path / "videomem"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    evaluate = copy / "eval" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\n\ndef _late():\n    from ..train import validation\n")
    loop = copy / "memory" / "loop.py"
    loop.write_text("from videomem import rl\n" + loop.read_text())
    edges = project_edges(copy)
    errors = back_imports(edges)
    assert len(errors) == 2, errors
    assert errors[0].startswith("eval/evaluate.py:") and "videomem.train (train)" in errors[0]
    assert errors[1] == "memory/loop.py:1: imports videomem.rl (rl), a layer above memory"


def test_relative_imports_resolve(tmp_path):
    pkg = tmp_path / "videomem"
    (pkg / "rl").mkdir(parents=True)
    (pkg / "rl" / "__init__.py").write_text("from .loss import x\nfrom .. import train\n")
    (pkg / "rl" / "loss.py").write_text("from ..memory.loop import y\nfrom . import rewards\n")
    assert imported_modules(pkg / "rl" / "__init__.py", pkg) == [
        (1, "videomem.rl.loss"),
        (2, "videomem.train"),
    ]
    assert imported_modules(pkg / "rl" / "loss.py", pkg) == [(1, "videomem.memory.loop"), (2, "videomem.rl")]


def test_the_world_size_scan_sees_a_second_lookup(tmp_path):
    copy = tmp_path / "videomem"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    loss = copy / "rl" / "loss.py"
    loss.write_text(loss.read_text() + "\n\ndef _w():\n    return torch.distributed.get_world_size()\n")
    assert [f.split(":")[0] for f in world_size_lookups(copy)] == ["rl/loss.py"]
