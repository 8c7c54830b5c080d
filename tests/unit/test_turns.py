"""Speech regions, subsegments, clustering and turns of the embedded diarizer (whisper_triton.turns)."""

from __future__ import annotations

import numpy as np
import pytest

from whisper_triton import turns as T


def test_speech_regions_join_overlapping_frames_and_clip_to_the_audio() -> None:
    active = np.array([0, 1, 1, 0, 0, 0, 1, 1])
    # frames every 0.5 s, 1 s long: frames 1-2 give 0.5-2.0, frames 6-7 give 3.0-4.5 clipped to 4.2
    assert T.speech_regions(active, 0.0, 0.5, 1.0, 4.2) == [(0.5, 2.0), (3.0, 4.2)]
    assert T.speech_regions(np.zeros(5), 0.0, 0.5, 1.0, 3.0) == []
    regions = T.speech_regions(active, np.float64(0.0), np.float64(0.5), np.float64(1.0), 4.2)
    assert all(type(bound) is float for region in regions for bound in region)  # JSON-encodable


def test_subsegments_cover_each_region_and_end_at_its_end() -> None:
    windows = T.subsegments([(0.0, 3.0), (5.0, 5.2), (6.0, 7.0)], window=1.5, shift=0.75)
    assert windows == [(0.0, 1.5), (0.75, 2.25), (1.5, 3.0), (6.0, 7.0)]  # 0.2 s region: no window


def _voices(counts: list[int], dim: int = 16, spread: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(dim, dim)))[0][: len(counts)]  # orthogonal voices
    rows = [centre + rng.normal(scale=spread, size=(count, dim)) for centre, count in zip(centres, counts,
                                                                                           strict=True)]
    vectors = np.concatenate(rows)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_cluster_finds_distinct_voices_in_order_of_appearance() -> None:
    labels = T.cluster(_voices([6, 5, 7]))
    assert list(labels) == [0] * 6 + [1] * 5 + [2] * 7


def test_cluster_counts_voices_of_unequal_length_by_eigengap() -> None:
    # Spread so wide that two subsegments of one voice are only ~0.45 cosine-similar: a fixed distance
    # threshold (the previous design's average linkage at 0.50) splits each voice into several.
    embeddings = _voices([30, 6, 14], dim=32, spread=0.2, seed=3)
    labels = T.cluster(embeddings)
    assert list(labels) == [0] * 30 + [1] * 6 + [2] * 14
    assert list(T.cluster(embeddings)) == list(labels)  # fixed k-means seeds: the same turns every time


def test_cluster_merges_speakers_whose_centroids_are_alike() -> None:
    rng = np.random.default_rng(5)
    first, other = np.linalg.qr(rng.normal(size=(16, 16)))[0][:2]
    second = 0.8 * first + 0.6 * other  # cosine 0.8 with the first voice
    rows = np.concatenate([centre + rng.normal(scale=0.02, size=(10, 16)) for centre in (first, second)])
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    assert len(set(T.cluster(rows))) == 1  # above MERGE_COSINE: one voice
    assert len(set(T.cluster(rows, merge_cosine=0.9))) == 2
    assert len(set(T.cluster(rows, min_speakers=2))) == 2  # never below the floor the caller asked for


def test_too_little_speech_is_one_speaker() -> None:
    assert list(T.cluster(_voices([2, 3]))) == [0] * 5  # under MIN_CLUSTERED subsegments (4 s of speech)
    assert len(set(T.cluster(_voices([2, 3]), min_speakers=2))) == 2


def test_cluster_merges_a_cluster_too_small_to_stand_alone() -> None:
    embeddings = _voices([8, 8, 1])
    assert len(set(T.cluster(embeddings))) == 2
    assert len(set(T.cluster(embeddings, min_cluster=1))) == 3
    assert len(set(T.cluster(embeddings, min_speakers=3))) == 3  # the floor the caller asked for


def test_cluster_obeys_the_speaker_counts() -> None:
    embeddings = _voices([6, 6, 6])
    assert len(set(T.cluster(embeddings, num_speakers=2))) == 2
    assert len(set(T.cluster(embeddings, max_speakers=2))) == 2
    same = _voices([12])
    assert len(set(T.cluster(same, min_speakers=2))) == 2
    assert len(set(T.cluster(same))) == 1


def test_cluster_of_many_embeddings_samples_then_assigns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T, "MAX_CLUSTERED", 20)
    labels = T.cluster(_voices([30, 30]))
    assert list(labels) == [0] * 30 + [1] * 30


def test_cluster_of_nothing_or_one() -> None:
    assert list(T.cluster(np.zeros((0, 4)))) == []
    assert list(T.cluster(np.ones((1, 4)))) == [0]


def test_turns_follow_the_nearest_subsegment_and_never_overlap() -> None:
    regions = [(0.0, 3.0), (4.0, 5.0)]
    windows = [(0.0, 1.5), (0.75, 2.25), (1.5, 3.0), (4.0, 5.0)]
    turns = T.speaker_turns(regions, windows, np.array([0, 0, 1, 0]), ["A", "B"])
    assert [(t.start, t.end, t.speaker) for t in turns] == [(0.0, 1.88, "A"), (1.88, 3.0, "B"), (4.0, 5.0, "A")]
    assert all(type(t.start) is float and type(t.end) is float for t in turns)  # JSON-encodable
    numpy_regions = [(np.float64(a), np.float64(b)) for a, b in regions]
    assert all(type(t.end) is float for t in T.speaker_turns(numpy_regions, windows, np.array([0, 0, 1, 0]),
                                                               ["A", "B"]))
    assert T.speaker_turns(regions, [], np.array([]), []) == []


def test_centroids_are_the_mean_of_each_speaker() -> None:
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    means = T.centroids(embeddings, np.array([0, 1, 0]))
    assert np.allclose(means[0], [1.0, 0.0]) and np.allclose(means[1], [0.0, 1.0])


def test_each_stretch_goes_to_the_most_similar_centroid() -> None:
    stretches = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    means = [np.array([2.0, 0.0]), np.array([0.0, 0.5])]  # unnormalised means: cosine, not dot product
    assert list(T.nearest_speaker(stretches, means)) == [0, 1, 1]
    assert list(T.nearest_speaker(np.zeros((0, 2)), means)) == []
