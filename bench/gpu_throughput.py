"""Throughput of the TensorRT-LLM engine on a GPU: hours of audio transcribed per hour, at batch 1, 16 and 64.

    python -m bench.gpu_throughput --engines /engines --model large-v3-turbo [--batches 1,16,64] [--rounds 3]
                                   [--audio FILE] [--language en]

Each window holds 30 s of speech (the audio tiled to fill it) and goes through the engine and the shared
decoding code exactly as the Triton engine model runs a dynamic batch: timestamps on, temperature fallback on,
`batch` windows per call. Only the engine is measured: audio decoding, voice activity detection, features and
Triton's own overhead (about 4 ms a window, measured on CPU) are not. Needs an NVIDIA GPU and TensorRT-LLM;
without them it says so and exits with status 2. It prints what it measured and nothing else.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

WINDOW_SECONDS = 30.0


def missing_gpu() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    if importlib.util.find_spec("tensorrt_llm") is None:
        return "the tensorrt_llm Python package is not installed"
    return None


def speech_window(audio: Path | None, n_mels: int) -> tuple[np.ndarray, int]:
    from whisper_triton.audio import SAMPLE_RATE, decode_audio
    from whisper_triton.features import window_features

    if audio is None:
        from harness.assets import jfk_wav

        audio = jfk_wav()
    samples = decode_audio(audio.read_bytes()).samples
    length = int(WINDOW_SECONDS * SAMPLE_RATE)
    tiled = np.tile(samples, length // len(samples) + 1)[:length]
    return window_features(tiled, n_mels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", required=True, type=Path, help="WHISPER_TRTLLM_ENGINE_DIR")
    parser.add_argument("--model", required=True, help="the model the engines were built from (its tokenizer)")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=3, help="calls per batch size, after a warm-up call")
    parser.add_argument("--audio", type=Path, default=None, help="speech to tile (default: the JFK clip)")
    parser.add_argument("--language", default="en", help="given language ('' to detect it in every window)")
    args = parser.parse_args(argv)
    reason = missing_gpu()
    if reason is not None:
        print(f"bench.gpu_throughput needs an NVIDIA GPU with TensorRT-LLM: {reason}.", file=sys.stderr)
        return 2

    import torch

    from whisper_triton.decoding import DecodeOptions, WindowJob, decode_windows
    from whisper_triton.models import read_model_info, resolve_model
    from whisper_triton.settings import ModelSettings
    from whisper_triton.text import WhisperTokenizer
    from whisper_triton.trtllm_engine import create_engine

    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    resolved = resolve_model(args.model)
    info = read_model_info(resolved.path)
    tokenizer = WhisperTokenizer(resolved.path / "tokenizer.json", info.multilingual, info.num_languages)
    settings = ModelSettings(engine="tensorrt_llm", trtllm_engine_dir=str(args.engines), trtllm_aligner="off")
    engine = create_engine(settings, resolved, info, tokenizer)
    features, frames = speech_window(args.audio, engine.n_mels)
    options = DecodeOptions(language=args.language or None)
    job = WindowJob(features, frames, options)
    print(f"GPU: {torch.cuda.get_device_name()}; TensorRT-LLM {metadata.version('tensorrt_llm')}; "
          f"model {args.model}; engines {args.engines} ({engine.config})")
    print(f"{'batch':>5} {'windows':>8} {'audio s':>9} {'wall s':>8} {'windows/s':>10} {'audio h per h':>14}")
    try:
        for batch in batches:
            decode_windows(engine, tokenizer, [job] * batch)  # warm-up: CUDA graphs, allocations
            started = time.perf_counter()
            for _ in range(args.rounds):
                decode_windows(engine, tokenizer, [job] * batch)
            wall = time.perf_counter() - started
            windows = batch * args.rounds
            audio_seconds = windows * frames / 100
            print(f"{batch:>5} {windows:>8} {audio_seconds:>9.0f} {wall:>8.2f} {windows / wall:>10.2f} "
                  f"{audio_seconds / wall:>14.1f}")
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
