"""Face tracks: ids unique across streams, aging in the time the frames carry, smoothing per model."""

import numpy as np

from fer_ros.vision.tracking import FaceIds, FaceTracker

BOX = (100, 100, 80, 80)
MOVED = (104, 102, 80, 80)
ELSEWHERE = (400, 100, 80, 80)


def test_a_face_keeps_its_id_while_it_moves_and_a_new_face_gets_a_new_one():
    tracker = FaceTracker(max_age_s=1.0)
    (first,) = tracker.update([BOX], now=10.0)
    assert tracker.update([MOVED, ELSEWHERE], now=10.1)[0] == first
    assert len(set(tracker.update([MOVED, ELSEWHERE], now=10.2))) == 2


def test_tracks_age_in_the_given_time_not_wall_clock():
    tracker = FaceTracker(max_age_s=1.0)
    (first,) = tracker.update([BOX], now=100.0)
    assert tracker.update([BOX], now=100.9) == [first]   # 0.9 s of message time: same track
    (later,) = tracker.update([BOX], now=102.5)           # 1.6 s without the face: a new track
    assert later != first


def test_time_running_backwards_ends_every_track():
    tracker = FaceTracker(max_age_s=1.0)
    (first,) = tracker.update([BOX], now=50.0)
    (after_loop,) = tracker.update([BOX], now=1.0)
    assert after_loop != first


def test_ids_are_unique_across_trackers_that_share_an_id_source_and_across_sources():
    ids = FaceIds()
    cameras = [FaceTracker(new_id=ids) for _ in range(3)]
    issued = [face_id for t in cameras for face_id in t.update([BOX, ELSEWHERE], now=0.0)]
    issued += [face_id for t in cameras for face_id in t.update([], now=5.0) + t.update([BOX], now=5.1)]
    assert len(issued) == len(set(issued)) == 9
    assert all(face_id.startswith('face_') and len(face_id) == 11 for face_id in issued)
    restarted = [FaceTracker(new_id=FaceIds()).update([BOX], now=0.0)[0] for _ in range(50)]
    assert len(set(restarted)) >= 49  # 24 random bits per id


def test_smoothing_averages_one_model_and_restarts_when_the_labels_change():
    tracker = FaceTracker(smoothing=0.5)
    (face,) = tracker.update([BOX], now=0.0)
    labels_a, labels_b = ('happy', 'sad'), ('sad', 'happy')
    assert np.allclose(tracker.smooth(face, np.array([1.0, 0.0]), labels_a), [1.0, 0.0])
    assert np.allclose(tracker.smooth(face, np.array([0.0, 1.0]), labels_a), [0.5, 0.5])
    # Another model with its labels in another order: no averaging across the two.
    assert np.allclose(tracker.smooth(face, np.array([0.2, 0.8]), labels_b), [0.2, 0.8])
