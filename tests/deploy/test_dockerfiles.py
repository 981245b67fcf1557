"""The Dockerfiles, checked without a Docker engine.

What a build or a first start would otherwise reveal: a COPY source that is missing or
excluded by .dockerignore, a root user, a command that is not a ``dfd`` subcommand, a
package list out of step with pyproject.toml, and, most useful, an import that the
image's packages cannot satisfy. For that, the Python modules each service can reach are
found by reading their import statements, and every third-party module among them must
come from a distribution the image installs (its ``pip install`` list and what those
require, resolved in this environment); the service's entry modules are then imported
for real with every other third-party module hidden.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata as md
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cli.main import build_parser

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
PROJECT = {"dfd", "cli", "gateway", "dispatcher", "export", "ensemble_config", "benchmarks"}
# Heavy imports that sit inside functions the serving path never calls, by module.
OFF_PATH: dict[tuple[str, str], str] = {}


@dataclass
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        text = re.sub(r"\\\n", " ", path.read_text())
        out = cls(path)
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keyword, _, rest = line.partition(" ")
                out.instructions.append((keyword.upper(), rest.strip()))
        return out

    def all(self, keyword: str) -> list[str]:
        return [rest for k, rest in self.instructions if k == keyword]

    def exec_form(self, keyword: str) -> list[str]:
        values = self.all(keyword)
        return json.loads(values[-1]) if values else []

    def pip_requirements(self) -> list[str]:
        """Requirement strings of the ``pip install`` commands (not ``.`` or ``-e .``)."""
        out = []
        for run in self.all("RUN"):
            for command in run.split("&&"):
                words = shlex.split(command)
                if words[:2] != ["pip", "install"]:
                    continue
                skip = False
                for word in words[2:]:
                    if skip:
                        skip = False
                    elif word in ("--index-url", "--extra-index-url"):
                        skip = True
                    elif not word.startswith("-") and word != "." and "$" not in word:
                        out.append(word)
        return out


DOCKERFILES = {
    p.name.removesuffix(".Dockerfile"): Dockerfile.read(p)
    for p in sorted(DOCKER.glob("*.Dockerfile"))
}
# Services whose image installs an explicit package list, and the modules they start from.
SERVICES = {
    "gateway": ["gateway.app", "cli.gateway"],
    "worker": ["dispatcher.worker", "dispatcher.jobs"],
}


def test_there_is_one_dockerfile_per_service() -> None:
    assert set(DOCKERFILES) == {"gateway", "worker", "models"}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_small_base_and_non_root_user(name: str) -> None:
    dockerfile = DOCKERFILES[name]
    assert dockerfile.all("FROM") == ["python:3.11-slim"]
    users = dockerfile.all("USER")
    assert users and users[-1] not in ("root", "0", "0:0")
    # The user is created in the image, with the data folder as its home.
    assert any("useradd" in run and users[-1] in run for run in dockerfile.all("RUN"))


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(relative: str) -> bool:
    parts = Path(relative).parts
    for pattern in _dockerignore():
        pattern = pattern.removeprefix("**/")
        for i in range(len(parts)):
            if fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) or fnmatch.fnmatch(
                parts[i], pattern
            ):
                return True
    return False


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_copy_sources_exist_and_reach_the_build_context(name: str) -> None:
    for copy in DOCKERFILES[name].all("COPY"):
        *sources, _ = copy.split()
        for source in sources:
            assert not source.startswith("--"), f"{name}: COPY flags are not expected here"
            assert (ROOT / source).exists(), f"{name}: COPY {source}: missing"
            assert not _ignored(source), f"{name}: COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_out_environments_weights_and_generated_repositories() -> None:
    for path in (
        ".venv/bin/python",
        ".dfd/onnx/x.onnx",
        "model_repository/cpu/x",
        "weights.pth",
        "clip.mp4",
        ".env",
    ):
        assert _ignored(path), path
    for path in ("cli/main.py", "export/manifest.json", "model_repository/python_onnx/model.py"):
        assert not _ignored(path), path


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_the_command_is_a_dfd_subcommand(name: str) -> None:
    dockerfile = DOCKERFILES[name]
    argv = dockerfile.exec_form("ENTRYPOINT") + dockerfile.exec_form("CMD")
    assert argv[0] == "dfd"
    args = build_parser().parse_args(argv[1:])
    assert callable(getattr(args, "handler", None)), argv


def _pyproject_dependencies() -> dict[str, Requirement]:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {canonicalize_name(r.name): r for r in map(Requirement, data["project"]["dependencies"])}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_package_lists_follow_pyproject(name: str) -> None:
    declared = _pyproject_dependencies()
    for text in DOCKERFILES[name].pip_requirements():
        requirement = Requirement(text)
        key = canonicalize_name(requirement.name)
        assert key in declared, f"{name}: {text} is not a dependency in pyproject.toml"
        assert requirement.specifier == declared[key].specifier, (
            f"{name}: {text} vs {declared[key]}"
        )
        assert requirement.extras <= declared[key].extras, f"{name}: {text} vs {declared[key]}"


def test_models_image_pins_the_torch_of_pyproject() -> None:
    dockerfile = DOCKERFILES["models"]
    arg = next(a for a in dockerfile.all("ARG") if a.startswith("TORCH_VERSION="))
    assert str(_pyproject_dependencies()["torch"].specifier) == f"=={arg.split('=', 1)[1]}"


# -- imports a service can reach, against the packages its image installs ---------------


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imports(path: Path) -> list[str]:
    """Modules imported anywhere in the file, except under TYPE_CHECKING or in a try that
    catches ImportError (optional, GPU-only imports)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Try) and any(
            h.type is not None
            and re.search(r"ImportError|ModuleNotFoundError", ast.unparse(h.type))
            for h in node.handlers
        ):
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def reachable(entries: list[str]) -> tuple[set[str], dict[str, set[str]]]:
    """Project modules reachable from ``entries``, and third-party top-level module -> importers."""
    seen: set[str] = set()
    third: dict[str, set[str]] = {}
    stack = list(entries)
    while stack:
        module = stack.pop()
        if module in seen or _module_file(module) is None:
            continue
        seen.add(module)
        parts = module.split(".")
        stack.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        for imported in _imports(_module_file(module)):  # type: ignore[arg-type]
            top = imported.split(".")[0]
            if top in PROJECT:
                stack.append(imported)
            elif top not in sys.stdlib_module_names and (module, top) not in OFF_PATH:
                third.setdefault(top, set()).add(module)
    return seen, third


def installed_closure(requirements: list[str]) -> set[str]:
    """Distribution names an image gets from ``pip install REQUIREMENTS``, resolved here."""
    environment = default_environment()
    done: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    stack = [Requirement(r) for r in requirements]
    while stack:
        requirement = stack.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in done:
            continue
        done.add(key)
        names.add(key[0])
        for text in md.distribution(requirement.name).requires or []:
            nested = Requirement(text)
            extras = [""] + sorted(requirement.extras)
            if nested.marker is None or any(
                nested.marker.evaluate({**environment, "extra": e}) for e in extras
            ):
                stack.append(nested)
    return names


def providers() -> dict[str, set[str]]:
    """Top-level module -> distributions installing it, in this environment."""
    return {
        m: {canonicalize_name(d) for d in dists} for m, dists in md.packages_distributions().items()
    }


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_import_the_service_can_reach_is_installed_in_its_image(name: str) -> None:
    _, third = reachable(SERVICES[name])
    installed = installed_closure(DOCKERFILES[name].pip_requirements())
    by_module = providers()
    missing = {
        top: sorted(importers)
        for top, importers in third.items()
        if not by_module.get(top, set()) & installed
    }
    assert missing == {}, f"{name} image lacks the packages of these imports (module: importers)"


def test_gateway_image_has_no_media_or_ml_library() -> None:
    installed = installed_closure(DOCKERFILES["gateway"].pip_requirements())
    assert not installed & {
        "torch",
        "numpy",
        "av",
        "pillow",
        "tritonclient",
        "onnx",
        "onnxruntime",
        "opencv-python",
    }


def test_worker_image_has_no_training_or_export_library() -> None:
    installed = installed_closure(DOCKERFILES["worker"].pip_requirements())
    assert not installed & {"torch", "onnx", "onnxruntime", "h5py", "nvidia-pytriton"}


_HIDDEN_IMPORT_CHECK = """
import importlib, importlib.abc, json, sys
hidden = set(json.loads(sys.argv[1]))
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (not in this image)", name=name)
        return None
sys.meta_path.insert(0, Hide())
for module in json.loads(sys.argv[2]):
    importlib.import_module(module)
from cli.main import build_parser
parser = build_parser()
print(json.dumps(sorted(parser._subparsers._group_actions[0].choices)))
"""


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_entry_modules_and_the_dfd_command_import_with_only_the_image_packages(name: str) -> None:
    installed = installed_closure(DOCKERFILES[name].pip_requirements())
    hidden = sorted(
        top for top, dists in providers().items() if not dists & installed and top not in PROJECT
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _HIDDEN_IMPORT_CHECK,
            json.dumps(hidden),
            json.dumps(SERVICES[name]),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    commands = set(json.loads(done.stdout))
    assert {"gateway", "worker", "serve", "demo", "models"} <= commands
