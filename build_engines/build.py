"""`trtllm-build` for Whisper's encoder and decoder: the command lines, and idempotent, resumable steps.

The flags are NVIDIA's (TensorRT-LLM `examples/models/core/whisper/README.md`, tensorrtllm_backend
`docs/whisper.md`) with the decoder's lengths widened for long-form decoding: our prompts carry up to
223 tokens of previous text (`<|startofprev|>` ... `<|startoftranscript|>`, 225 tokens in all) and a window
may generate up to Whisper's 448 text positions, where NVIDIA's example stops at 14 prompt and 114 total.
The encoder takes the 3000 log-mel frames of a 30 s window (its output is 1500 positions, the decoder's
`--max_encoder_input_len` is still 3000: TensorRT-LLM sizes the cross-attention from the encoder input).

Weight-only quantisation (int8/int4) is applied to the converted checkpoint first, exactly as NVIDIA's
`convert_checkpoint.py --use_weight_only` does (`weight_only_quantize_dict`), into `checkpoint-<precision>/`.

Each step (quantize, encoder, decoder) writes into a hidden `.NAME.partial` directory that is renamed into
place when it succeeded, and records a key in `build.json` (the command, the checkpoint's files, the
TensorRT-LLM version, the GPU model). A step whose key matches a complete output is skipped, so a run
interrupted after the encoder resumes with the decoder, and a second run does nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

TRTLLM_BUILD = "trtllm-build"
ENCODER_INPUT_FRAMES = 3000  # log-mel frames of a 30 s window
DECODER_MAX_SEQ_LEN = 448  # Whisper's text context: prompt and generated tokens together
DECODER_MAX_INPUT_LEN = 225  # <|startofprev|> + 223 tokens of previous text + <|startoftranscript|>
DTYPES = ("float16", "bfloat16")
WEIGHT_ONLY = {"none": None, "int8": "W8A16", "int4": "W4A16"}
MANIFEST = "build.json"
ENGINE_FILES = ("config.json", "rank0.engine")
CHECKPOINT_FILES = ("config.json", "rank0.safetensors")
PARTS = ("encoder", "decoder")

Progress = Callable[[str], None]
Runner = Callable[..., "subprocess.CompletedProcess[Any]"]


class BuildError(Exception):
    """A build cannot run or failed; the message says why and what to do."""


@dataclass(frozen=True)
class BuildOptions:
    max_batch_size: int = 64
    max_beam_width: int = 4
    dtype: str = "float16"
    weight_only: str = "none"  # none | int8 | int4

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise BuildError(f"--dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.weight_only not in WEIGHT_ONLY:
            raise BuildError(f"--weight-only must be one of {', '.join(WEIGHT_ONLY)}, not {self.weight_only!r}")
        if self.max_batch_size < 1 or self.max_beam_width < 1:
            raise BuildError("--max-batch-size and --max-beam-width must be at least 1")


def timing_cache(output: Path) -> Path:
    """Where trtllm-build reads and writes TensorRT's timing cache: beside the engine folders, shared by the
    encoder and decoder builds. Its default is `model.cache` in the working directory, which the GPU image
    (user 10001 in a read-only WORKDIR) cannot write: every build then failed with PermissionError."""
    return output.parent / "trtllm-timing.cache"


def _cache_flags(output: Path) -> list[str]:
    return ["--input_timing_cache", str(timing_cache(output)), "--output_timing_cache", str(timing_cache(output))]


def encoder_command(checkpoint: Path, output: Path, options: BuildOptions) -> list[str]:
    """`trtllm-build` of the encoder: 3000 frames in; no GEMM plugin (NVIDIA's choice for the encoder)."""
    return [
        TRTLLM_BUILD,
        "--checkpoint_dir", str(checkpoint / "encoder"),
        "--output_dir", str(output),
        *_cache_flags(output),
        "--moe_plugin", "disable",
        "--max_batch_size", str(options.max_batch_size),
        "--gemm_plugin", "disable",
        "--bert_attention_plugin", options.dtype,
        "--max_input_len", str(ENCODER_INPUT_FRAMES),
        "--max_seq_len", str(ENCODER_INPUT_FRAMES),
        # Whole windows per pass: the default 8192 tokens (with packed inputs) fits two 3000-frame windows,
        # so in-flight batching would encode at most two windows at a time.
        "--max_num_tokens", str(options.max_batch_size * ENCODER_INPUT_FRAMES),
    ]  # fmt: skip


def decoder_command(checkpoint: Path, output: Path, options: BuildOptions) -> list[str]:
    """`trtllm-build` of the decoder: paged KV cache and packed inputs, which in-flight batching needs."""
    return [
        TRTLLM_BUILD,
        "--checkpoint_dir", str(checkpoint / "decoder"),
        "--output_dir", str(output),
        *_cache_flags(output),
        "--moe_plugin", "disable",
        "--max_beam_width", str(options.max_beam_width),
        "--max_batch_size", str(options.max_batch_size),
        "--max_seq_len", str(DECODER_MAX_SEQ_LEN),
        "--max_input_len", str(DECODER_MAX_INPUT_LEN),
        "--max_encoder_input_len", str(ENCODER_INPUT_FRAMES),
        "--gemm_plugin", options.dtype,
        "--bert_attention_plugin", options.dtype,
        "--gpt_attention_plugin", options.dtype,
        "--kv_cache_type", "paged",
        "--remove_input_padding", "enable",
    ]  # fmt: skip


def require_tool(name: str = TRTLLM_BUILD) -> str:
    path = shutil.which(name)
    if path is None:
        raise BuildError(
            f"{name} is not on PATH. It comes with TensorRT-LLM: run this inside NVIDIA's container "
            "nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3 (docker run --gpus all ...), "
            "or pip install tensorrt_llm on a host with a CUDA driver."
        )
    return path


def require_gpu(run: Runner = subprocess.run) -> str:
    """The name of the first NVIDIA GPU (engines only run on the GPU model they were built on)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise BuildError(
            "No NVIDIA GPU: nvidia-smi is not on PATH. TensorRT-LLM builds engines on the GPU they will run "
            "on; run this on a GPU host (in Docker: --gpus all, with the NVIDIA Container Toolkit)."
        )
    try:
        result = run([smi, "-L"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"No usable NVIDIA GPU: `nvidia-smi -L` failed ({exc}).") from exc
    gpus = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("GPU ")]
    if result.returncode != 0 or not gpus:
        detail = (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
        raise BuildError(f"No usable NVIDIA GPU: `nvidia-smi -L` found none ({detail}).")
    return gpus[0].split(":", 1)[-1].split("(UUID")[0].strip()


def tensorrt_llm_version() -> str:
    try:
        return metadata.version("tensorrt_llm")
    except metadata.PackageNotFoundError:
        return "unknown"


def read_checkpoint(checkpoint: Path) -> dict[str, dict[str, Any]]:
    """The encoder and decoder `config.json` of a TensorRT-LLM Whisper checkpoint."""
    configs = {}
    for part in PARTS:
        if not all((checkpoint / part / name).is_file() for name in CHECKPOINT_FILES):
            raise BuildError(
                f"{checkpoint} is not a TensorRT-LLM Whisper checkpoint (no {part}/config.json and "
                f"{part}/rank0.safetensors): run `python -m build_engines convert` first."
            )
        configs[part] = json.loads((checkpoint / part / "config.json").read_text(encoding="utf-8"))
    return configs


def fingerprint(folder: Path) -> str:
    """Names, sizes and times of a folder's files: changes when the checkpoint is rewritten."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def _key(**parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class Manifest:
    """`build.json`: the key of each finished step."""

    def __init__(self, output: Path) -> None:
        self.path = output / MANIFEST
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        self.steps: dict[str, Any] = data.get("steps", {}) if isinstance(data, dict) else {}

    def done(self, step: str, key: str) -> bool:
        entry = self.steps.get(step)
        return isinstance(entry, dict) and entry.get("key") == key

    def record(self, step: str, key: str, **details: object) -> None:
        self.steps[step] = {"key": key, **details}
        partial = self.path.with_name(f".{MANIFEST}.partial")
        partial.write_text(json.dumps({"steps": self.steps}, indent=2, default=str) + "\n", encoding="utf-8")
        partial.replace(self.path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _replace(partial: Path, target: Path) -> None:
    _remove(target)
    partial.rename(target)


def _complete(folder: Path, files: tuple[str, ...]) -> bool:
    return all((folder / name).is_file() for name in files)


def _step(
    name: str,
    key: str,
    target: Path,
    files: tuple[str, ...],
    make: Callable[[Path], None],
    manifest: Manifest,
    progress: Progress,
) -> None:
    if manifest.done(name, key) and _complete(target, files):
        progress(f"{name}: up to date in {target}, skipping")
        return
    partial = target.with_name(f".{target.name}.partial")
    _remove(partial)  # left by an interrupted run
    try:
        make(partial)
        if not _complete(partial, files):
            raise BuildError(f"{name}: the step finished without writing {', '.join(files)} in {partial}")
        _replace(partial, target)
    finally:
        _remove(partial)
    manifest.record(name, key, output=str(target))
    progress(f"{name}: done, {target}")


Command = Callable[[Path, Path, BuildOptions], list[str]]


def _trtllm_build(
    name: str, command: Command, checkpoint: Path, options: BuildOptions, run: Runner, progress: Progress
) -> Callable[[Path], None]:
    def make(partial: Path) -> None:
        argv = command(checkpoint, partial, options)
        progress(f"{name}: building ({' '.join(argv)})")
        result = run(argv, check=False)
        if result.returncode != 0:
            raise BuildError(
                f"trtllm-build failed for the {name} (exit code {result.returncode}); see its output above."
            )

    return make


def quantize_checkpoint(source: Path, target: Path, precision: str) -> None:
    """Weight-only int8/int4 of a float checkpoint, as NVIDIA's converter does it (needs tensorrt_llm)."""
    try:
        from safetensors.torch import load_file, save_file
        from tensorrt_llm.models.convert_utils import weight_only_quantize_dict
    except ImportError as exc:
        raise BuildError(
            f"weight-only {precision} needs TensorRT-LLM's Python package (import failed: {exc})"
        ) from exc
    algorithm = WEIGHT_ONLY[precision]
    for part in PARTS:
        config = json.loads((source / part / "config.json").read_text(encoding="utf-8"))
        weights = load_file(str(source / part / "rank0.safetensors"))
        quantized = weight_only_quantize_dict(weights, quant_algo=algorithm, plugin=True)
        config["quantization"] = {**(config.get("quantization") or {}), "quant_algo": algorithm}
        (target / part).mkdir(parents=True)
        (target / part / "config.json").write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
        save_file({name: tensor.contiguous() for name, tensor in quantized.items()},
                  str(target / part / "rank0.safetensors"))


def needs_quantization(configs: dict[str, dict[str, Any]], options: BuildOptions) -> bool:
    """Checks the options against the checkpoint; whether it still needs weight-only quantisation."""
    dtype = str(configs["decoder"].get("dtype", options.dtype))
    if dtype != options.dtype:
        raise BuildError(
            f"the checkpoint is {dtype} but --dtype is {options.dtype}: convert again with --dtype "
            f"{options.dtype}, or build with --dtype {dtype}"
        )
    algorithm = (configs["decoder"].get("quantization") or {}).get("quant_algo")
    wanted = WEIGHT_ONLY[options.weight_only]
    if algorithm is not None and algorithm != wanted:
        raise BuildError(f"the checkpoint is already quantized ({algorithm}); --weight-only {options.weight_only} "
                         "needs a float checkpoint")
    return wanted is not None and algorithm is None


def build_engines(
    checkpoint: Path,
    output: Path,
    options: BuildOptions,
    progress: Progress = print,
    run: Runner = subprocess.run,
) -> Path:
    """Builds `output/encoder` and `output/decoder` from a converted checkpoint; returns `output`."""
    options.validate()
    checkpoint, output = checkpoint.expanduser().resolve(), output.expanduser().resolve()
    quantize = needs_quantization(read_checkpoint(checkpoint), options)
    gpu = require_gpu(run)
    require_tool()
    output.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(output)
    common = {"tensorrt_llm": tensorrt_llm_version(), "gpu": gpu}
    progress(f"Building Whisper engines from {checkpoint} into {output} on {gpu} ({asdict(options)})")
    if quantize:
        source = checkpoint
        checkpoint = output / f"checkpoint-{options.weight_only}"
        key = _key(step="quantize", checkpoint=fingerprint(source), precision=options.weight_only, **common)
        _step("quantize", key, checkpoint, (f"decoder/{CHECKPOINT_FILES[1]}",),
              lambda partial: quantize_checkpoint(source, partial, options.weight_only), manifest, progress)
    for part, command in (("encoder", encoder_command), ("decoder", decoder_command)):
        target = output / part
        key = _key(step=part, command=command(checkpoint, target, options),
                   checkpoint=fingerprint(checkpoint / part), **common)
        make = _trtllm_build(part, command, checkpoint, options, run, progress)
        _step(part, key, target, ENGINE_FILES, make, manifest, progress)
    return output
