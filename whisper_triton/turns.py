"""From speech regions and speaker embeddings of short stretches of them to speaker turns.

The embedded diarizer (see `whisper_triton.diarization`) finds speech with pyannote's segmentation model,
cuts it into overlapping 1.5 s subsegments, embeds each (CAM++) and clusters the embeddings; then every
0.75 s stretch of speech (every 0.25 s) goes to the nearest speaker centroid, and every 10 ms of speech
gets the speaker of the nearest stretch. This is the recipe of 3D-Speaker's diarization,
for which CAM++ was trained; on far-field meeting excerpts (AMI) it confused fewer speakers than
clustering the segmentation model's own 10 s speaker tracks, which split or merge voices in
reverberant rooms (bench/der.py: 19 % against 46 % DER on the held-out excerpts).

Pure numpy/scipy: unit-tested without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WINDOW = 1.5  # seconds per subsegment (3D-Speaker's diarization recipe)
SHIFT = 0.5  # 0.75 in 3D-Speaker's recipe: a finer step places speaker changes closer
MIN_REGION = 0.3  # shorter speech regions get no subsegment of their own (the nearest one labels them)
# Average-linkage cosine distance at which clusters stop merging, and the fewest subsegments a cluster
# needs to stand alone (smaller ones join the most similar cluster; 4 span 2 s of speech). Chosen on the
# tuning recordings of bench/der.py (the AMI "trn" excerpts of pyannote.audio's test data, the phone call
# and the flite dialogues): 0.50-0.60 and 2-8 subsegments tie on the AMI excerpts (12-16 % DER); above
# 0.52 the two voices of the phone call merge into one.
THRESHOLD = 0.50
MIN_CLUSTER = 4
# After clustering, every 0.75 s stretch (every 0.25 s) of speech goes to the speaker whose centroid it is
# most similar to, which places speaker changes finer than the 1.5 s subsegments: a quick answer between
# another speaker's turns keeps its speaker (the phone call of bench/der.py: 3.2 % DER instead of 6.2 %;
# AMI tune excerpts 13.3 % instead of 13.8 %).
RESEGMENT_WINDOW = 0.75
RESEGMENT_SHIFT = 0.25
MAX_CLUSTERED = 3000  # more subsegments (about 40 min of speech): cluster a sample, assign the rest
FRAME = 0.01  # resolution of the turns, seconds


@dataclass(frozen=True)
class Turn:
    start: float  # seconds
    end: float
    speaker: str  # "SPEAKER_00", "SPEAKER_01", ...


def speech_regions(active: np.ndarray, start: float, step: float, duration: float,
                   length: float) -> list[tuple[float, float]]:
    """The union of the frames flagged `active` (frame i spans start + i * step for `duration` s), clipped
    to [0, length] seconds."""
    regions: list[tuple[float, float]] = []
    for index in np.flatnonzero(np.asarray(active).reshape(-1)):
        begin = max(0.0, float(start + index * step))
        end = min(float(length), begin + float(duration))
        if end <= begin:
            continue
        if regions and begin <= regions[-1][1]:
            regions[-1] = (regions[-1][0], max(regions[-1][1], end))
        else:
            regions.append((begin, end))
    return regions


def subsegments(regions: Sequence[tuple[float, float]], window: float = WINDOW,
                shift: float = SHIFT) -> list[tuple[float, float]]:
    """Windows of `window` s every `shift` s inside each region; the last one ends at the region's end,
    and a region shorter than a window is one subsegment."""
    result: list[tuple[float, float]] = []
    for begin, end in regions:
        if end - begin < MIN_REGION:
            continue
        position = begin
        while True:
            if position + window >= end:
                result.append((max(begin, end - window), end))
                break
            result.append((position, position + window))
            position += shift
    return result


def cluster(
    embeddings: np.ndarray,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    threshold: float = THRESHOLD,
    min_cluster: int = MIN_CLUSTER,
) -> np.ndarray:
    """Speaker index of each embedding (rows L2-normalised), numbered in order of first appearance."""
    count = len(embeddings)
    if count == 0:
        return np.zeros(0, dtype=int)
    if count == 1:
        return np.zeros(1, dtype=int)
    if count > MAX_CLUSTERED:
        sample = np.linspace(0, count - 1, MAX_CLUSTERED).round().astype(int)
        labels = cluster(embeddings[sample], num_speakers, min_speakers, max_speakers, threshold, min_cluster)
        return _first_appearance(nearest_speaker(embeddings, centroids(embeddings[sample], labels)))
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(embeddings, method="average", metric="cosine")
    if num_speakers is not None:
        labels = fcluster(tree, min(num_speakers, count), criterion="maxclust") - 1
        return _first_appearance(labels)
    labels = fcluster(tree, threshold, criterion="distance") - 1
    labels = _merge_small(embeddings, labels, min_cluster, floor=min_speakers or 1)
    found = len(np.unique(labels))
    if max_speakers is not None and found > max_speakers:
        labels = fcluster(tree, max_speakers, criterion="maxclust") - 1
    elif min_speakers is not None and found < min_speakers:
        labels = fcluster(tree, min(min_speakers, count), criterion="maxclust") - 1
    return _first_appearance(labels)


def nearest_speaker(embeddings: np.ndarray, means: Sequence[np.ndarray]) -> np.ndarray:
    """Index of the centroid each embedding (rows L2-normalised) is most cosine-similar to."""
    if len(embeddings) == 0 or not means:
        return np.zeros(len(embeddings), dtype=int)
    stacked = np.array(means)
    stacked /= np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
    return np.asarray((embeddings @ stacked.T).argmax(axis=1))


def centroids(embeddings: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Mean embedding of each speaker, in label order."""
    return [embeddings[labels == k].mean(axis=0) for k in range(int(labels.max()) + 1)] if len(labels) else []


def speaker_turns(regions: Sequence[tuple[float, float]], windows: Sequence[tuple[float, float]],
                  labels: np.ndarray, names: Sequence[str]) -> list[Turn]:
    """Every FRAME of speech gets the speaker of the subsegment whose centre is nearest; runs of one
    speaker inside a region are turns. One speaker at a time: the turns never overlap."""
    if not windows:
        return []
    centres = np.array([(a + b) / 2 for a, b in windows])
    turns: list[Turn] = []
    for begin, end in regions:
        times = np.arange(begin, end, FRAME)
        if len(times) == 0:
            continue
        owner = np.asarray(labels)[np.abs((times + FRAME / 2)[:, None] - centres[None]).argmin(axis=1)]
        cuts = np.flatnonzero(np.diff(owner)) + 1
        for first, last in zip(np.r_[0, cuts], np.r_[cuts, len(times)], strict=True):
            stop = float(end) if last == len(times) else float(times[last])
            turns.append(Turn(round(float(times[first]), 3), round(stop, 3), names[int(owner[first])]))
    return turns


def _merge_small(embeddings: np.ndarray, labels: np.ndarray, min_cluster: int, floor: int) -> np.ndarray:
    """Clusters of fewer than `min_cluster` members join the cluster whose centroid is most similar,
    smallest first, while more than `floor` clusters remain."""
    labels = labels.copy()
    while True:
        ids, sizes = np.unique(labels, return_counts=True)
        if len(ids) <= floor or sizes.min() >= min_cluster:
            return labels
        small = ids[int(sizes.argmin())]
        others = [k for k in ids if k != small]
        means = np.array([embeddings[labels == k].mean(axis=0) for k in others])
        labels[labels == small] = others[int(np.argmax(means @ embeddings[labels == small].mean(axis=0)))]


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    for label in labels:
        order.setdefault(int(label), len(order))
    return np.array([order[int(label)] for label in labels], dtype=int)
