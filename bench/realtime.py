"""Live transcription latency: how long after a turn's end its transcript arrives, one session alone and
8 sessions at once while file requests run (sessions that leave the language to the server, then sessions
that give it: a session's turns share engine windows with other sessions' once its language is known).

    python -m bench.realtime [--model base] [--sessions 8] [--turns 6]

Each session streams real read speech (clips of the "report" corpus of at most 10 s, 1.5 s of room
tone between them) at real time, 100 ms of 24 kHz PCM per append, to `/v1/realtime?intent=transcription`
of our whole stack (`python -m frontend.serve`: Triton and the frontend) with server_vad (500 ms of
silence ends a turn). Measured per turn, on the client's clock: from `speech_stopped` to `completed`
(what a caption or a voice assistant waits for); per session: WER of its turns joined against the
clips' texts, audio seconds the server counted against the seconds sent (none dropped), and deltas that
do not spell their completed text (must be 0). During the loaded phase, another client sends a
10-minute file through `/v1/audio/transcriptions` again and again. Prints a table and writes
bench/results/<date>-<host>-realtime.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import websockets
from scipy.signal import resample_poly

from bench.saved import save_run
from harness.nonspeech import nonspeech
from harness.speech import long_speech, speech_clips
from harness.stack import start_served
from harness.text import wer

CHUNK_S = 0.1
GAP_S = 1.5
MAX_CLIP_S = 10.0
LATENCY_P50_S, LATENCY_P95_S = 1.0, 2.5  # the targets (issue 16)


class Phase(msgspec.Struct):
    name: str
    sessions: int
    turns: int
    p50_s: float
    p95_s: float
    max_s: float
    wer: float
    audio_sent_s: float
    audio_counted_s: float
    contradicting_deltas: int
    latencies: list[float]
    by_session: list[list[float]]  # each session's latencies in turn order


def script(seed: int, turns: int) -> tuple[bytes, str, float]:
    """A session's audio (24 kHz PCM), its reference text and its length (s)."""
    clips = [c for c in speech_clips("report") if 1.5 <= c.duration <= MAX_CLIP_S]
    rng = np.random.default_rng(seed)
    chosen = [clips[i] for i in rng.choice(len(clips), size=turns, replace=False)]
    gap = nonspeech("room_tone", GAP_S, seed=seed)
    pieces = [gap]
    for clip in chosen:
        pieces += [np.asarray(clip.samples, dtype=np.float32), gap]
    samples = np.concatenate(pieces)
    pcm = (np.clip(resample_poly(samples, 3, 2), -1, 1) * 32767).astype("<i2").tobytes()
    return pcm, " ".join(c.text for c in chosen), len(samples) / 16_000


async def session(url: str, pcm: bytes, language: str | None) -> dict[str, Any]:
    """Streams `pcm` at real time (the session's language given, or left for the server to detect); the turns'
    latencies, texts and usage."""
    stopped: dict[str, float] = {}
    latencies: list[float] = []
    texts: dict[str, str] = {}
    deltas: dict[str, str] = {}
    counted = 0.0
    progress = asyncio.Event()  # set by each completed transcript
    chunk = int(24_000 * 2 * CHUNK_S)
    async with websockets.connect(url, max_size=None) as ws:
        json.loads(await ws.recv())
        if language is not None:
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {
                "input": {"transcription": {"model": "whisper-1", "language": language}}}}}))

        async def receive() -> None:
            nonlocal counted
            async for raw in ws:
                event = json.loads(raw)
                kind = event["type"]
                if kind == "input_audio_buffer.speech_stopped":
                    stopped[event["item_id"]] = time.perf_counter()
                elif kind == "conversation.item.input_audio_transcription.delta":
                    deltas[event["item_id"]] = deltas.get(event["item_id"], "") + event["delta"]
                elif kind == "conversation.item.input_audio_transcription.completed":
                    if event["item_id"] in stopped:
                        latencies.append(time.perf_counter() - stopped[event["item_id"]])
                    texts[event["item_id"]] = event["transcript"]
                    counted += event["usage"]["seconds"]
                    progress.set()
                elif kind == "error":
                    raise RuntimeError(event["error"])

        reader = asyncio.create_task(receive())
        started = time.perf_counter()
        for index, at in enumerate(range(0, len(pcm), chunk)):
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(pcm[at : at + chunk]).decode()}))
            await asyncio.sleep(max(0.0, started + (index + 1) * CHUNK_S - time.perf_counter()))
        deadline = time.perf_counter() + 60
        while (set(stopped) - set(texts)) and time.perf_counter() < deadline:  # the last turns' transcripts
            progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), max(0.01, deadline - time.perf_counter()))
        reader.cancel()
    contradicting = sum(deltas.get(item, "").strip() != text for item, text in texts.items())
    return {"latencies": latencies, "text": " ".join(texts[k] for k in texts), "counted": counted,
            "contradicting": contradicting}


async def files_meanwhile(base_url: str, stop: asyncio.Event, audio: bytes) -> int:
    done = 0
    async with httpx.AsyncClient(timeout=600) as client:
        while not stop.is_set():
            response = await client.post(f"{base_url}/v1/audio/transcriptions", data={"model": "whisper-1"},
                                         files={"file": ("long.wav", audio)})
            response.raise_for_status()
            done += 1
    return done


async def phase(name: str, url: str, sessions: int, turns: int, base_url: str | None, file: bytes,
                language: str | None = None) -> Phase:
    scripts = [script(seed, turns) for seed in range(sessions)]
    stop = asyncio.Event()
    background = asyncio.create_task(files_meanwhile(base_url, stop, file)) if base_url else None
    if background is not None:
        await asyncio.sleep(3)  # the file request is in flight when the sessions start
    results = await asyncio.gather(*(session(url, pcm, language) for pcm, _, _ in scripts))
    stop.set()
    if background is not None:
        background.cancel()
    latencies = sorted(x for r in results for x in r["latencies"])
    errors = [wer(text, r["text"]) for (_, text, _), r in zip(scripts, results, strict=True)]
    return Phase(name, sessions, len(latencies), round(statistics.median(latencies), 3),
                 round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3), round(latencies[-1], 3),
                 round(statistics.mean(errors), 4), round(sum(s[2] for s in scripts), 1),
                 round(sum(r["counted"] for r in results), 1), sum(r["contradicting"] for r in results),
                 [round(x, 3) for x in latencies], [[round(x, 3) for x in r["latencies"]] for r in results])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    file = long_speech("report", 10.0).path.read_bytes()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as tmp:
        served = start_served(Path(tmp), args.model)
        try:
            url = served.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
            asyncio.run(phase("warm-up", url, 1, 2, None, file))
            phases = [asyncio.run(phase("one session", url, 1, args.turns, None, file)),
                      asyncio.run(phase(f"{args.sessions} sessions + file requests", url, args.sessions, args.turns,
                                        served.base_url, file)),
                      asyncio.run(phase(f"{args.sessions} sessions (language given) + files", url, args.sessions,
                                        args.turns, served.base_url, file, language="en"))]
        finally:
            served.stop()
    print(f"\nLive transcription latency, {args.model}, {os.cpu_count()} cores (speech_stopped -> completed):")
    print(f"{'phase':<34} {'turns':>5} {'p50 s':>6} {'p95 s':>6} {'max s':>6} {'WER':>6} {'audio sent/counted':>19} "
          f"{'bad deltas':>10}")
    for p in phases:
        print(f"{p.name:<34} {p.turns:5d} {p.p50_s:6.2f} {p.p95_s:6.2f} {p.max_s:6.2f} {p.wer:6.1%} "
              f"{p.audio_sent_s:8.1f} / {p.audio_counted_s:8.1f} {p.contradicting_deltas:10d}")
    one, detected, given = phases
    print(f"targets: p50 <= {LATENCY_P50_S} s alone: {'met' if one.p50_s <= LATENCY_P50_S else 'NOT met'}; "
          f"p95 <= {LATENCY_P95_S} s loaded: {'met' if detected.p95_s <= LATENCY_P95_S else 'NOT met'} "
          f"(language detected), {'met' if given.p95_s <= LATENCY_P95_S else 'NOT met'} (language given)")
    path = save_run("realtime", {"phases": phases}, args.json, model=args.model, elapsed_s=round(time.time() - started))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
