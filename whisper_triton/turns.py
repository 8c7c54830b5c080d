"""From speech regions and speaker embeddings of short stretches of them to speaker turns.

The embedded diarizer (see `whisper_triton.diarization`) finds speech with pyannote's segmentation model,
cuts it into overlapping 1.5 s subsegments, embeds each (CAM++) and clusters the embeddings
spectrally; then every 0.75 s stretch of speech (every 0.25 s) goes to the nearest speaker centroid, and
every 10 ms of speech gets the speaker of the nearest stretch. This is the recipe of 3D-Speaker's
diarization, for which CAM++ was trained; on far-field meeting excerpts (AMI) it confused fewer speakers
than clustering the segmentation model's own 10 s speaker tracks, which split or merge voices in
reverberant rooms (bench/der.py: 15 % against 46 % DER on the held-out excerpts).

Pure numpy/scipy: unit-tested without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WINDOW = 1.5  # seconds per subsegment (3D-Speaker's diarization recipe)
SHIFT = 0.5  # 0.75 in 3D-Speaker's recipe: a finer step places speaker changes closer
MIN_REGION = 0.3  # shorter speech regions get no subsegment of their own (the nearest one labels them)
# Without a given speaker count, the subsegments are clustered spectrally, as 3D-Speaker's recipe for
# CAM++ does: each row of the cosine affinity keeps its P_KEEP share (at least P_MIN neighbours), the
# largest gap among the first MAX_SPEAKERS + 1 eigenvalues of the graph Laplacian gives the count, and
# k-means on the eigenvectors the speakers; clusters of fewer than MIN_CLUSTER subsegments (2 s of speech)
# give their members to the nearest bigger one, and speakers whose centroids are more than MERGE_COSINE
# similar are merged. Fewer than MIN_CLUSTERED subsegments (4 s of speech) are one speaker.
# P_KEEP, P_MIN, MIN_CLUSTER and MAX_SPEAKERS are 3D-Speaker's defaults, untuned; MERGE_COSINE (its
# configurations use 0.8-0.85) was chosen on the tuning recordings of bench/der.py (AMI "trn" excerpts, the
# phone call, the flite dialogues): 0.7 and 0.75 tie on the AMI excerpts (14.3 % DER; 0.8: 27 %, as
# quiet third voices split off), below 0.7 the phone call's two voices merge. Counting by eigengap rather
# than by a distance threshold is what holds on recordings it was not tuned on: the threshold of the
# previous design (average linkage, cosine distance 0.50) gave 13 % DER on the tuning excerpts and 27 %
# on the held-apart ones (2-speaker excerpts split into 3-4); the eigengap gives 14 % and 15 %.
P_KEEP = 0.02
P_MIN = 6
MAX_SPEAKERS = 10
MIN_CLUSTER = 4
MERGE_COSINE = 0.70
MIN_CLUSTERED = 6
KMEANS_RUNS = 10  # k-means starts (k-means++ seeding, fixed seeds: the same audio gives the same turns)
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
    merge_cosine: float = MERGE_COSINE,
    min_cluster: int = MIN_CLUSTER,
) -> np.ndarray:
    """Speaker index of each embedding (rows L2-normalised), numbered in order of first appearance.

    A given `num_speakers` cuts the average-linkage tree at that count (on the AMI tuning excerpts 20 %
    DER against 50 % for spectral k-means, which splits a dominant voice to reach a count that includes
    speakers of a few words); otherwise the count comes from the eigengap (see the constants above),
    searched between `min_speakers` and `max_speakers`.
    """
    count = len(embeddings)
    if count <= 1:
        return np.zeros(count, dtype=int)
    if count > MAX_CLUSTERED:
        sample = np.linspace(0, count - 1, MAX_CLUSTERED).round().astype(int)
        labels = cluster(embeddings[sample], num_speakers, min_speakers, max_speakers, merge_cosine, min_cluster)
        return _first_appearance(nearest_speaker(embeddings, centroids(embeddings[sample], labels)))
    if num_speakers is not None:
        return _tree_cut(embeddings, num_speakers)
    floor = min(min_speakers or 1, count)
    ceiling = max(floor, min(max_speakers or MAX_SPEAKERS, count - 1))
    if count < MIN_CLUSTERED and floor == 1:
        return np.zeros(count, dtype=int)
    labels = _spectral(embeddings, floor, ceiling)
    labels = _absorb_small(embeddings, labels, min_cluster, floor)
    labels = _merge_similar(embeddings, labels, merge_cosine, floor)
    if len(np.unique(labels)) < floor:  # k-means left a cluster empty
        return _tree_cut(embeddings, floor)
    return _first_appearance(labels)


def _tree_cut(embeddings: np.ndarray, speakers: int) -> np.ndarray:
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(embeddings, method="average", metric="cosine")
    return _first_appearance(fcluster(tree, min(speakers, len(embeddings)), criterion="maxclust") - 1)


def _spectral(embeddings: np.ndarray, floor: int, ceiling: int) -> np.ndarray:
    """Spectral clustering of the pruned cosine affinity, the count from the largest eigengap in
    [floor, ceiling]."""
    import scipy.linalg
    from scipy.cluster.vq import kmeans2

    count = len(embeddings)
    affinity = embeddings @ embeddings.T
    pruned = min(int((1 - P_KEEP) * count), count - P_MIN)  # the least similar of each row are cut
    if pruned > 0:
        weakest = np.argsort(affinity, axis=1, kind="stable")[:, :pruned]
        np.put_along_axis(affinity, weakest, 0.0, axis=1)
    affinity = 0.5 * (affinity + affinity.T)
    np.fill_diagonal(affinity, 0.0)
    laplacian = np.diag(np.abs(affinity).sum(axis=1)) - affinity
    # The gap is searched up to MAX_SPEAKERS even under a lower ceiling: three clear voices asked to be
    # at most two are two, not one. Only the smallest eigenpairs are computed (3000 subsegments: 2 s).
    top = max(ceiling, min(MAX_SPEAKERS, count - 1))
    values, vectors = scipy.linalg.eigh(laplacian, subset_by_index=[0, top])
    gaps = np.diff(values[floor - 1 :])
    speakers = min(int(np.argmax(gaps)) + floor, ceiling) if len(gaps) else floor
    if speakers <= 1:
        return np.zeros(count, dtype=int)
    points = vectors[:, :speakers]
    best, best_inertia = np.zeros(count, dtype=int), np.inf
    for seed in range(KMEANS_RUNS):
        means, labels = kmeans2(points, speakers, minit="++", seed=seed)
        inertia = float(((points - means[labels]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return np.asarray(best, dtype=int)


def nearest_speaker(embeddings: np.ndarray, means: Sequence[np.ndarray]) -> np.ndarray:
    """Index of the centroid each embedding (rows L2-normalised) is most cosine-similar to."""
    if len(embeddings) == 0 or not means:
        return np.zeros(len(embeddings), dtype=int)
    stacked = np.array(means)
    stacked /= np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
    return np.asarray((embeddings @ stacked.T).argmax(axis=1))


def centroids(embeddings: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Mean embedding of each speaker, in label order."""
    return centroids_of(embeddings, labels, range(int(labels.max()) + 1)) if len(labels) else []


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


def _absorb_small(embeddings: np.ndarray, labels: np.ndarray, min_cluster: int, floor: int) -> np.ndarray:
    """Members of clusters with fewer than `min_cluster` members go, one by one, to the most similar
    centroid of the bigger clusters (all stay when that would leave fewer than `floor` speakers)."""
    ids, sizes = np.unique(labels, return_counts=True)
    major = ids[sizes >= min_cluster]
    if len(major) == len(ids) or len(major) < max(floor, 1):
        return labels
    labels = labels.copy()
    minor = ~np.isin(labels, major)
    labels[minor] = major[nearest_speaker(embeddings[minor], centroids_of(embeddings, labels, major))]
    return labels


def _merge_similar(embeddings: np.ndarray, labels: np.ndarray, merge_cosine: float, floor: int) -> np.ndarray:
    """The two speakers with the most similar centroids become one while their cosine similarity is at
    least `merge_cosine` and more than `floor` speakers remain."""
    labels = labels.copy()
    while True:
        ids = np.unique(labels)
        if len(ids) <= max(floor, 1):
            return labels
        means = np.array(centroids_of(embeddings, labels, ids))
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        similarity = np.triu(means @ means.T, 1)
        first, second = np.unravel_index(int(similarity.argmax()), similarity.shape)
        if similarity[first, second] < merge_cosine:
            return labels
        labels[labels == ids[second]] = ids[first]


def centroids_of(embeddings: np.ndarray, labels: np.ndarray, ids: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Mean embedding of each speaker in `ids`."""
    return [embeddings[labels == k].mean(axis=0) for k in ids]


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    for label in labels:
        order.setdefault(int(label), len(order))
    return np.array([order[int(label)] for label in labels], dtype=int)
