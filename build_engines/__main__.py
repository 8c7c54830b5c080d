"""`python -m build_engines convert|build|render|all`: Whisper checkpoints to served TensorRT-LLM models.

    convert  --checkpoint SRC --output DIR [--dtype float16]
    build    --checkpoint DIR --output DIR [--max-batch-size 64 --max-beam-width 4 --dtype ... --weight-only none]
    render   --engines DIR --repository OUT [--route ...] [--instances 1 --max-batch-size N ...]
    all      --model large-v3-turbo --workdir /engines [--route auto|engine|pytorch] [the options of build and render]

`all` takes the route the installed TensorRT-LLM supports (WHISPER_TRTLLM_ROUTE or --route force one): the engine
route converts and builds engines with trtllm-build; the PyTorch route (TensorRT-LLM without trtllm-build) fetches
the Hugging Face checkpoint, which TensorRT-LLM's PyTorch backend serves as it is.

Every step is idempotent (a second run skips what is done) and resumable; see build_engines/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from build_engines.build import BuildError, BuildOptions, build_engines, read_checkpoint, require_tool
from build_engines.checkpoint_errors import ConversionError
from build_engines.fetch import fetch_checkpoint
from build_engines.render import RenderOptions, render_repository
from whisper_triton.settings import SettingsError
from whisper_triton.trtllm_route import ROUTES, resolve_route

# Names accepted by --model, as the checkpoints on the Hugging Face Hub they stand for.
HF_CHECKPOINTS = {
    **{name: f"openai/whisper-{name}" for name in (
        "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
        "large-v2", "large-v3", "large-v3-turbo",
    )},
    "large-v1": "openai/whisper-large",
    "turbo": "openai/whisper-large-v3-turbo",
    "distil-large-v2": "distil-whisper/distil-large-v2",
    "distil-large-v3": "distil-whisper/distil-large-v3",
    "distil-medium.en": "distil-whisper/distil-medium.en",
    "distil-small.en": "distil-whisper/distil-small.en",
}  # fmt: skip
DEFAULT_REPOSITORY = "model_repository"


def checkpoint_source(model: str) -> str:
    """A model name (`large-v3-turbo`) as its Hugging Face id; ids, paths and `.pt` files as given."""
    return HF_CHECKPOINTS.get(model.strip(), model.strip())


def engine_subdir(model: str) -> str:
    """Where `all` puts a model's engines under the work directory: its id as the engine model looks it up."""
    from whisper_triton.models import model_id

    return model_id(model)


def _add_build_options(parser: argparse.ArgumentParser, dtype_default: str | None) -> None:
    parser.add_argument("--max-batch-size", type=int, default=64, help="largest batch the engines run (64)")
    parser.add_argument("--max-beam-width", type=int, default=4, help="largest beam the decoder engine runs (4)")
    parser.add_argument("--dtype", choices=("float16", "bfloat16"), default=dtype_default,
                        help="activations and plugins (build: the checkpoint's; all: float16)")
    parser.add_argument("--weight-only", choices=("none", "int8", "int4"), default="none",
                        help="weight-only quantisation of the GEMMs (none)")


def _add_render_options(parser: argparse.ArgumentParser, batch_flag: bool) -> None:
    parser.add_argument("--instances", type=int, default=1, help="engine model instances per GPU (1)")
    if batch_flag:
        parser.add_argument("--max-batch-size", type=int, default=None,
                            help="Triton's and the executor's batch (default: the engines' maximum)")
    parser.add_argument("--workers", type=int, default=2,
                        help="batches handed to each instance's executor at once (2)")
    parser.add_argument("--kv-cache-fraction", type=float, default=0.5,
                        help="fraction of free GPU memory for the KV cache (0.5)")
    parser.add_argument("--cross-kv-cache-fraction", type=float, default=0.5,
                        help="fraction of the KV cache for cross-attention (0.5)")
    parser.add_argument("--beam-size", type=int, default=1, help="beam width of the executor (1: greedy)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m build_engines", description=__doc__.split("\n")[0])
    commands = root.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="Whisper checkpoint -> TensorRT-LLM checkpoint")
    convert.add_argument("--checkpoint", required=True, help="Hugging Face id or directory, or an OpenAI .pt")
    convert.add_argument("--output", required=True, type=Path)
    convert.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")

    build = commands.add_parser("build", help="trtllm-build of the encoder and decoder engines")
    build.add_argument("--checkpoint", required=True, type=Path, help="a converted checkpoint (encoder/, decoder/)")
    build.add_argument("--output", required=True, type=Path)
    _add_build_options(build, None)

    render = commands.add_parser("render", help="the GPU model repository for built engines")
    render.add_argument("--engines", required=True, type=Path)
    render.add_argument("--repository", required=True, type=Path)
    render.add_argument("--models", default=None, help="WHISPER_MODELS for serve.env (default: the engine folders)")
    render.add_argument("--route", choices=ROUTES[1:], default=None,
                        help="what --engines holds: engine or pytorch (default: engines if any, else checkpoints)")
    _add_render_options(render, batch_flag=True)

    everything = commands.add_parser("all", help="convert + build + render, or fetch + render (PyTorch route)")
    everything.add_argument("--model", required=True,
                            help=f"{', '.join(HF_CHECKPOINTS)}, a Hugging Face id, a directory or a .pt file")
    everything.add_argument("--workdir", required=True, type=Path,
                            help="engines go to WORKDIR/<model id>, the repository to WORKDIR/model_repository")
    everything.add_argument("--repository", type=Path, default=None)
    everything.add_argument("--route", choices=ROUTES, default=os.environ.get("WHISPER_TRTLLM_ROUTE") or "auto",
                            help="engine (trtllm-build engines), pytorch (the Hugging Face checkpoint on "
                                 "TensorRT-LLM's PyTorch backend) or auto: what the installed TensorRT-LLM supports "
                                 "(default: WHISPER_TRTLLM_ROUTE, else auto)")
    _add_build_options(everything, "float16")
    _add_render_options(everything, batch_flag=False)
    return root


def _build_options(args: argparse.Namespace, checkpoint: Path) -> BuildOptions:
    dtype = args.dtype or str(read_checkpoint(checkpoint)["decoder"].get("dtype", "float16"))
    return BuildOptions(max_batch_size=args.max_batch_size, max_beam_width=args.max_beam_width, dtype=dtype,
                        weight_only=args.weight_only)


def _render_options(args: argparse.Namespace, max_batch_size: int | None) -> RenderOptions:
    return RenderOptions(instances=args.instances, max_batch_size=max_batch_size,
                         workers=args.workers, kv_cache_fraction=args.kv_cache_fraction,
                         cross_kv_cache_fraction=args.cross_kv_cache_fraction, beam_size=args.beam_size)


def _convert(source: str, output: Path, dtype: str) -> Path:
    from build_engines.convert import convert_checkpoint  # torch and transformers: only when converting

    return convert_checkpoint(source, output, dtype, progress=print)


def _prefetch_tokenizer(model: str) -> None:
    """The CTranslate2 model of the same checkpoint: the engine model's tokenizer and word aligner."""
    from whisper_triton.models import ModelError, resolve_model

    try:
        resolved = resolve_model(model)
        print(f"tokenizer and word-timestamp model: {resolved.path}")
    except ModelError as exc:
        print(f"warning: {exc} The engine model needs it at start (set WHISPER_MODELS to a model of the same "
              "checkpoint that resolves).", file=sys.stderr)


def describe_route(setting: str) -> str:
    route = resolve_route(setting)
    if setting != "auto":
        return f"{route} (--route / WHISPER_TRTLLM_ROUTE)"
    if route == "engine":
        return "engine (this TensorRT-LLM has trtllm-build and tensorrt_llm.builder)"
    return "pytorch (this TensorRT-LLM has no trtllm-build or tensorrt_llm.builder: its PyTorch backend serves the " \
           "Hugging Face checkpoint, nothing to build)"


def run_all(args: argparse.Namespace) -> Path:
    workdir = args.workdir.expanduser().resolve()
    model_dir = workdir / engine_subdir(args.model)
    source = checkpoint_source(args.model)
    repository = (args.repository or workdir / DEFAULT_REPOSITORY).expanduser().resolve()
    route = resolve_route(args.route)
    print(f"route: {describe_route(args.route)}")
    if route == "pytorch":
        print(f"[1/3] fetching the Hugging Face checkpoint {source} into {model_dir / 'hf'}")
        fetch_checkpoint(source, model_dir / "hf", progress=print)
        print("[2/3] preparing the tokenizer")
        _prefetch_tokenizer(args.model)
        print(f"[3/3] rendering the GPU model repository {repository}")
        return render_repository(workdir, repository, _render_options(args, args.max_batch_size),
                                 models=[args.model], route=route)
    require_tool()  # before a conversion of minutes that could not be built
    print(f"[1/4] converting {source} ({args.dtype})")
    checkpoint = _convert(source, model_dir / "checkpoint", args.dtype)
    print(f"[2/4] building the engines into {model_dir}")
    build_engines(checkpoint, model_dir, _build_options(args, checkpoint))
    print("[3/4] preparing the tokenizer")
    _prefetch_tokenizer(args.model)
    print(f"[4/4] rendering the GPU model repository {repository}")
    render_repository(workdir, repository, _render_options(args, args.max_batch_size), models=[args.model],
                      route=route)
    return repository


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "convert":
            _convert(args.checkpoint, args.output, args.dtype)
        elif args.command == "build":
            build_engines(args.checkpoint, args.output, _build_options(args, args.checkpoint))
        elif args.command == "render":
            models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
            repository = render_repository(args.engines, args.repository, _render_options(args, args.max_batch_size),
                                           models=models, route=args.route)
            print(f"Wrote {repository}; serve it with: set -a; . {repository / 'serve.env'}; set +a; make serve")
        else:
            repository = run_all(args)
            print(f"Done. Serve with: set -a; . {repository / 'serve.env'}; set +a; make serve")
    except (BuildError, ConversionError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
