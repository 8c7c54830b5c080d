"""The GPU model repository: the engine model's GPU configuration, rendered for either TensorRT-LLM route.

`render_repository` writes a model repository that `make serve` (TRITON_MODEL_REPOSITORY) or the GPU image
serves as is: every model of `model_repository/` is linked unchanged except `whisper_engine`, whose
`config.pbtxt` becomes the GPU variant (KIND_GPU instances, a larger dynamic batch, and the TensorRT-LLM
settings as model parameters, which the engine model reads before its environment). `serve.env` beside it
holds the environment that goes with it. Nothing is left as a `${...}` placeholder.

Engine route (what `python -m build_engines build` writes, and what the engine model looks for):
`<engines>/{encoder,decoder}` for one model, or `<engines>/<model id>/{encoder,decoder}` for several.
PyTorch route (what `python -m build_engines all --route pytorch` fetches): a Hugging Face checkpoint in
`<engines>`, `<engines>/hf`, `<engines>/<model id>` or `<engines>/<model id>/hf`. Without a route, the folder's
contents decide: engines if it has any, else checkpoints.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from build_engines.build import ENGINE_FILES, PARTS, BuildError
from build_engines.fetch import is_whisper_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SOURCE_REPOSITORY = ROOT / "model_repository"
ENGINE_MODEL = "whisper_engine"
SERVE_ENV = "serve.env"
DEFAULT_MAX_BATCH_SIZE = 64  # PyTorch route: the LLM's batch when --max-batch-size is not given
HEADERS = {
    "engine": Template("""\
# Whisper engine, GPU variant, rendered by `python -m build_engines render` for the TensorRT-LLM engines in
# ${engines_comment}. The tensors are those of model_repository/whisper_engine/config.pbtxt. The windows of
# all in-flight requests queue in the model's scheduler; its workers hand batches of up to ${max_batch_size}
# to one TensorRT-LLM C++ executor per instance (in-flight batching), which holds its own copy of the engines
# and its own KV cache.
"""),
    "pytorch": Template("""\
# Whisper engine, GPU variant, rendered by `python -m build_engines render` for the Hugging Face checkpoints in
# ${engines_comment}, served by TensorRT-LLM's PyTorch backend (no engine build). The tensors are those of
# model_repository/whisper_engine/config.pbtxt. The windows of all in-flight requests queue in the model's
# scheduler; its workers hand batches of up to ${max_batch_size} to one TensorRT-LLM LLM per instance (in-flight
# batching), which holds its own copy of the weights and its own KV cache.
"""),
}
ENGINE_CONFIG = Template("""\
${header}name: "whisper_engine"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
${io}instance_group [ { count: ${instances} kind: KIND_GPU } ]
parameters { key: "WHISPER_ENGINE_MAX_BATCH" value { string_value: "${max_batch_size}" } }
parameters { key: "WHISPER_ENGINE_WORKERS" value { string_value: "${workers}" } }
parameters { key: "WHISPER_ENGINE" value { string_value: "tensorrt_llm" } }
parameters { key: "WHISPER_TRTLLM_ROUTE" value { string_value: "${route}" } }
parameters { key: "WHISPER_TRTLLM_ENGINE_DIR" value { string_value: "${engine_dir}" } }
parameters { key: "WHISPER_TRTLLM_MAX_BATCH_SIZE" value { string_value: "${max_batch_size}" } }
parameters { key: "WHISPER_TRTLLM_KV_CACHE_FRACTION" value { string_value: "${kv_cache_fraction}" } }
parameters { key: "WHISPER_TRTLLM_CROSS_KV_CACHE_FRACTION" value { string_value: "${cross_kv_cache_fraction}" } }
parameters { key: "WHISPER_BEAM_SIZE" value { string_value: "${beam_size}" } }
""")


@dataclass(frozen=True)
class RenderOptions:
    instances: int = 1
    max_batch_size: int | None = None  # None: the engines' own maximum (PyTorch route: DEFAULT_MAX_BATCH_SIZE)
    workers: int = 2  # batches handed to the executor at once: one is prepared while another runs
    kv_cache_fraction: float = 0.5  # of the GPU memory free after loading, for the paged KV cache
    cross_kv_cache_fraction: float = 0.5  # of that KV cache, for cross-attention (encoder-decoder models)
    beam_size: int = 1

    def validate(self) -> None:
        if self.instances < 1:
            raise BuildError("--instances must be at least 1")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise BuildError("--max-batch-size must be at least 1")
        if self.workers < 1:
            raise BuildError("--workers must be at least 1")
        for flag, value in (("--kv-cache-fraction", self.kv_cache_fraction),
                            ("--cross-kv-cache-fraction", self.cross_kv_cache_fraction)):
            if not 0 < value < 1:
                raise BuildError(f"{flag} must be between 0 and 1 (exclusive), not {value}")
        if self.beam_size < 1:
            raise BuildError("--beam-size must be at least 1")


def find_engines(root: Path) -> dict[str, Path]:
    """Engine sets under `root`, by model id ("" for engines directly in `root`)."""
    found = {}
    for engine in sorted(root.glob("**/encoder/rank0.engine")):
        folder = engine.parent.parent
        depth = len(folder.relative_to(root).parts)
        if depth <= 2 and all((folder / part / name).is_file() for part in PARTS for name in ENGINE_FILES):
            found["/".join(folder.relative_to(root).parts)] = folder
    return found


def find_checkpoints(root: Path) -> dict[str, Path]:
    """Hugging Face Whisper checkpoints under `root`, by model id ("" for one directly in `root` or `root/hf`).
    Folders are listed, not walked: `hf` is often a link to a checkpoint elsewhere."""
    folders = [root, *(p for pattern in ("*", "*/*") for p in sorted(root.glob(pattern)))]
    found = {}
    for folder in folders:
        if (folder.name == "hf" and folder != root) or not folder.is_dir():
            continue
        checkpoint = next((c for c in (folder / "hf", folder) if is_whisper_checkpoint(c)), None)
        if checkpoint is not None:
            found["/".join(folder.relative_to(root).parts)] = checkpoint
    return found


def engine_limits(folder: Path) -> tuple[int, int]:
    """The decoder engine's (max_batch_size, max_beam_width)."""
    config: dict[str, Any] = json.loads((folder / "decoder" / "config.json").read_text(encoding="utf-8"))
    build = config.get("build_config") or {}
    return int(build.get("max_batch_size", 64)), int(build.get("max_beam_width", 1))


def io_block(source_config: str) -> str:
    """The `input [...]` and `output [...]` declarations of the CPU template, verbatim."""
    match = re.search(r"(?ms)^input \[$.*?^\]\n^output \[$.*?^\]\n", source_config)
    if match is None:
        raise BuildError("model_repository/whisper_engine/config.pbtxt has no input [...] output [...] block")
    return match.group(0)


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render_engine_config(source_config: str, engines: Path, options: RenderOptions, max_batch_size: int,
                         route: str = "engine") -> str:
    header = HEADERS[route].substitute(engines_comment=str(engines).replace("\n", " "), max_batch_size=max_batch_size)
    text = ENGINE_CONFIG.substitute(
        header=header,
        route=route,
        io=io_block(source_config),
        max_batch_size=max_batch_size,
        workers=options.workers,
        instances=options.instances,
        engine_dir=_quoted(str(engines)),
        kv_cache_fraction=options.kv_cache_fraction,
        cross_kv_cache_fraction=options.cross_kv_cache_fraction,
        beam_size=options.beam_size,
    )
    if "${" in text:
        raise BuildError("the rendered engine configuration still has a ${...} placeholder")
    return text


def serve_environment(repository: Path, engines: Path, models: list[str], max_batch_size: int,
                      instances: int, route: str = "engine") -> str:
    what = "TensorRT-LLM engines" if route == "engine" else "Hugging Face checkpoints (TensorRT-LLM's PyTorch backend)"
    lines = [
        f"# Serve the {what} of {engines}: set -a; . {repository / SERVE_ENV}; set +a; make serve",
        f"TRITON_MODEL_REPOSITORY={shlex.quote(str(repository))}",
        "WHISPER_ENGINE=tensorrt_llm",
        f"WHISPER_TRTLLM_ROUTE={route}",
        f"WHISPER_TRTLLM_ENGINE_DIR={shlex.quote(str(engines))}",
    ]
    if models:
        lines.append(f"WHISPER_MODELS={shlex.quote(','.join(models))}")
    # Let one long recording fill a batch, and enough window calls in flight to fill every instance's.
    lines.append(f"WHISPER_MAX_WINDOWS_IN_FLIGHT={max_batch_size}")
    lines.append(f"WHISPER_BLS_THREADS={2 * max_batch_size * instances}")
    return "\n".join(lines) + "\n"


def _link(target: Path, link: Path) -> None:
    link.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def render_repository(
    engines: Path,
    repository: Path,
    options: RenderOptions,
    models: list[str] | None = None,
    source: Path = SOURCE_REPOSITORY,
    route: str | None = None,
) -> Path:
    """Writes the GPU model repository for what `engines` holds on `route` (None: its contents decide)."""
    options.validate()
    engines, repository = engines.expanduser().resolve(), repository.expanduser().resolve()
    found = find_engines(engines)
    if route is None:
        route = "engine" if found or not find_checkpoints(engines) else "pytorch"
    if route == "engine":
        max_batch_size = _engine_batch(engines, found, options)
    else:
        found = find_checkpoints(engines)
        if not found:
            raise BuildError(f"no Hugging Face Whisper checkpoint under {engines}: run `python -m build_engines all "
                             f"--route pytorch --model <model> --workdir {engines}`")
        max_batch_size = options.max_batch_size or DEFAULT_MAX_BATCH_SIZE
    config = render_engine_config((source / ENGINE_MODEL / "config.pbtxt").read_text(encoding="utf-8"), engines,
                                  options, max_batch_size, route)
    partial = repository.with_name(f".{repository.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / ENGINE_MODEL / "1").mkdir(parents=True)
    (partial / ENGINE_MODEL / "config.pbtxt").write_text(config, encoding="utf-8")
    _link(source / ENGINE_MODEL / "1" / "model.py", partial / ENGINE_MODEL / "1" / "model.py")
    for model in sorted(source.iterdir()):
        if model.name != ENGINE_MODEL and (model / "config.pbtxt").is_file():
            _link(model, partial / model.name)
    ids = models if models is not None else sorted(name for name in found if name)
    (partial / SERVE_ENV).write_text(
        serve_environment(repository, engines, ids, max_batch_size, options.instances, route), encoding="utf-8"
    )
    if repository.is_symlink() or repository.is_file():
        repository.unlink()
    elif repository.exists():
        shutil.rmtree(repository)
    partial.rename(repository)
    return repository


def _engine_batch(engines: Path, found: dict[str, Path], options: RenderOptions) -> int:
    """The batch of the engine route: the engines' (smallest) maximum, or less; the beam within theirs."""
    if not found:
        raise BuildError(f"no engines under {engines} (encoder/ and decoder/): run `python -m build_engines build`")
    limits = [engine_limits(folder) for folder in found.values()]
    ceiling = min(batch for batch, _ in limits)
    max_batch_size = options.max_batch_size or ceiling
    if max_batch_size > ceiling:
        raise BuildError(f"--max-batch-size {max_batch_size} is larger than the engines' maximum ({ceiling})")
    beams = min(beam for _, beam in limits)
    if options.beam_size > beams:
        raise BuildError(f"--beam-size {options.beam_size} is larger than the engines' maximum beam width ({beams})")
    return max_batch_size
