"""Rosbag evaluation: labelled bags from real faces, offline and live replay, reports, and bad bags."""

import json
import os
import shutil
import signal
import time

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from fer_ros.bag.evaluate import evaluate, load_labels, main as bag_eval_main
from fer_ros.bag.io import BagError, BagReader, BagWriter
from fer_ros.bag.labels import LabelError, read_sidecar
from fer_ros.bag.make import BAG_START_NS, bag_from_folder, bag_from_video, dataset_selection, sidecar_path
from fer_ros.bag.replay import run_live, run_offline
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore
from fer_ros.nodes.emotion_node import DEFAULT_MODEL
from fer_ros.pipeline import PipelineSettings
from fer_ros.training.evaluate import evaluate_in_frames, main as eval_main
from fer_ros.vision.framing import letterbox
from model_fixtures import write_tiny_model

FACES = {'happy': ['0-f15-hao-ph.jpg', 'single_face.jpg'], 'surprise': ['0-f1-su-ph.jpg'],
         'anger': ['15-f13-anc-ph.jpg'], 'disgust': ['45-m7-di-ph.jpg']}


@pytest.fixture(scope='module')
def face_folder(samples_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp('faces')
    for label, files in FACES.items():
        (folder / label).mkdir()
        for name in files:
            shutil.copy(samples_dir / name, folder / label / name)
    return folder


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp('models')
    write_tiny_model(directory, 'tiny')
    return directory


@pytest.fixture(scope='module')
def labelled_bag(face_folder, tmp_path_factory):
    bag = tmp_path_factory.mktemp('bags') / 'faces'
    result = bag_from_folder(face_folder, bag, rate=5.0, hold=2)
    assert result == {'images': 5, 'frames': 10, 'bag': str(bag), 'labels': str(sidecar_path(bag))}
    return bag


def test_made_bag_is_standard_mcap_with_schemas_and_matching_labels(labelled_bag):
    with AnyReader([labelled_bag]) as reader:  # plain rosbags, no fer_ros types registered
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {'/camera/image_raw': 'sensor_msgs/msg/Image', '/labels': 'std_msgs/msg/String'}
        assert all(c.msgdef.data for c in reader.connections)
        assert reader.message_count == 15
    assert list(labelled_bag.glob('*.mcap')) and (labelled_bag / 'metadata.yaml').is_file()
    # The label topic and the sidecar agree on every frame.
    with BagReader(labelled_bag) as reader:
        stamps = [frame.stamp_ns for frame in reader.frames('/camera/image_raw')]
        sidecar = read_sidecar(sidecar_path(labelled_bag), reader.start_time_ns)
    from_topic = load_labels(labelled_bag, '/labels', None)
    assert [sidecar.label_at(s) for s in stamps] == [from_topic.label_at(s) for s in stamps]
    assert [sidecar.label_at(s) for s in stamps][::2] == ['angry', 'disgusted', 'happy', 'surprised', 'happy']


def test_offline_and_live_replay_account_for_every_frame_and_agree(labelled_bag, model_dir, tmp_path):
    summary = evaluate(labelled_bag, mode='both', model='tiny', model_dir=str(model_dir), device='cpu',
                       rate=0.5, output=tmp_path)
    for mode in ('offline', 'live'):
        frames = summary['reports'][mode]['frames']
        assert frames['accounted'] and frames['total'] == 10 and frames['labelled'] == 10
        assert frames['face'] + frames['no_face'] + frames['skipped'] + frames['bad'] == 10
        report = json.loads((tmp_path / mode / 'report.json').read_text())
        assert report['model'] == 'tiny'
        for name in report['files'].values():
            assert (tmp_path / mode / name).stat().st_size > 0
        assert report['classification']['num_samples'] == frames['face']
        assert '# fer_ros bag evaluation' in (tmp_path / mode / 'report.md').read_text()
    assert summary['reports']['offline']['frames']['face'] == 10
    assert summary['reports']['offline']['frames']['skipped'] == 0
    agreement = summary['agreement']
    assert agreement['frames_classified_by_both'] >= 1
    assert agreement['agreement'] == 1.0
    live = json.loads((tmp_path / 'live' / 'report.json').read_text())
    assert live['latency']['count'] == live['frames']['face'] + live['frames']['no_face']
    with AnyReader([tmp_path / 'live' / 'emotion.mcap']) as reader:
        assert {c.msgtype for c in reader.connections} == {'fer_ros/msg/EmotionArray'}
        assert reader.message_count == live['messages_recorded']


@pytest.mark.parametrize('compressed', [False, True], ids=['raw', 'jpeg'])
def test_bag_offline_gives_fer_eval_frames_predictions_image_by_image(face_folder, tmp_path, compressed):
    shipped = ModelStore([SHIPPED_MODEL_DIR]).resolve(DEFAULT_MODEL)
    bag = tmp_path / 'faces'
    bag_from_folder(face_folder, bag, compressed=compressed)
    run = run_offline(bag, '/camera/image_raw', ExpressionClassifier(shipped, 'cpu'), PipelineSettings(video_mode=False))
    report = evaluate_in_frames(shipped, face_folder, kind='folder', split='', jpeg=compressed,
                                device='cpu')
    by_image = {row['image']: row for row in report['predictions']}
    selection = dataset_selection(face_folder, None)
    assert len(run.frames) == len(selection) == report['num_images'] == 5
    assert report['faces_found'] == sum(frame.primary is not None for frame in run.frames) == 5
    for (image, label), frame in zip(selection, run.frames):
        row = by_image[str(image)]
        assert row['label'] == label
        assert row['predicted'] == frame.primary.label
        assert row['confidence'] == pytest.approx(frame.primary.confidence, abs=1e-5)
    scored = [(row['label'], row['predicted']) for row in report['predictions']]
    assert report['accuracy'] == pytest.approx(sum(a == b for a, b in scored) / len(scored))


def test_fer_eval_frames_command_writes_report_predictions_and_plot(face_folder, model_dir, tmp_path):
    eval_main([str(model_dir / 'tiny'), str(face_folder), '--kind', 'folder', '--protocol', 'frames',
               '--face-size', '192', '--output', str(tmp_path)])
    report = json.loads((tmp_path / 'report.json').read_text())
    assert report['protocol'] == 'frames' and report['frame']['face_size'] == 192
    assert report['num_images'] == 5 and report['faces_found'] + report['no_face'] == 5
    assert report['num_samples'] == report['faces_found']
    rows = (tmp_path / 'predictions.csv').read_text().splitlines()
    assert rows[0] == 'image,label,predicted,confidence' and len(rows) == 6
    assert (tmp_path / 'confusion_matrix.png').stat().st_size > 0
    with pytest.raises(SystemExit, match='does not fit'):
        eval_main([str(model_dir / 'tiny'), str(face_folder), '--kind', 'folder', '--protocol', 'frames',
                   '--face-size', '600', '--output', str(tmp_path)])
    blank = tmp_path / 'blank' / 'happy'
    blank.mkdir(parents=True)
    cv2.imwrite(str(blank / 'gray.png'), np.full((48, 48), 128, np.uint8))
    with pytest.raises(SystemExit, match='no face found in any of the 1 frames'):
        eval_main([str(model_dir / 'tiny'), str(blank.parent), '--kind', 'folder', '--protocol', 'frames',
                   '--output', str(tmp_path / 'blank_report')])


def test_compressed_sqlite3_video_bag_with_interval_labels(samples_dir, model_dir, tmp_path):
    intervals = tmp_path / 'intervals.yaml'
    intervals.write_text('- {start: 0.0, end: 1.0, label: happiness}\n- {start: 1.5, end: 2.0, label: neutral}\n')
    bag = tmp_path / 'video'
    result = bag_from_video(samples_dir / 'single_face.mp4', bag, intervals, rate=10.0, compressed=True,
                            storage='sqlite3')
    assert result['frames'] >= 20 and list(bag.glob('*.db3'))
    summary = evaluate(bag, labels_file=intervals, model='tiny', model_dir=str(model_dir), device='cpu',
                       video_mode=True, output=tmp_path / 'report')
    frames = summary['reports']['offline']['frames']
    assert frames['accounted'] and frames['total'] == result['frames']
    assert 0 < frames['labelled'] < frames['total']  # 1.0-1.5 s and after 2.0 s are unlabelled
    labels = load_labels(bag, '/labels', None)
    assert labels.label_at(BAG_START_NS + 500_000_000) == 'happy'
    assert labels.label_at(BAG_START_NS + 1_200_000_000) is None


def test_fer2013_val_bag_offline(shared_data, model_dir, tmp_path):
    bag = tmp_path / 'fer_val'
    bag_from_folder(shared_data / 'fer2013' / 'val', bag, per_class=2)
    summary = evaluate(bag, labels_file=sidecar_path(bag), model='tiny', model_dir=str(model_dir), device='cpu',
                       output=tmp_path / 'report')
    frames = summary['reports']['offline']['frames']
    assert frames['total'] == 14 and frames['accounted'] and frames['labelled'] == 14
    assert frames['face'] >= 10  # 48 px crops, upscaled into the frame, are mostly found


def test_missing_topic_is_a_clear_error(labelled_bag, model_dir, tmp_path):
    with pytest.raises(BagError, match="no topic '/camera/missing'"):
        evaluate(labelled_bag, topic='/camera/missing', model='tiny', model_dir=str(model_dir),
                 output=tmp_path)


def test_topic_of_another_type_is_a_clear_error(labelled_bag, model_dir, tmp_path):
    with pytest.raises(BagError, match='has type std_msgs/msg/String'):
        evaluate(labelled_bag, topic='/labels', model='tiny', model_dir=str(model_dir), output=tmp_path)


def test_unknown_message_type_in_a_bag_is_a_clear_error(tmp_path):
    bag = tmp_path / 'unknown'
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection('/camera/image_raw', 'acme_msgs/msg/Frame', msgdef='uint8[] data',
                                           rihs01='RIHS01_' + '0' * 64)
        writer.write(connection, BAG_START_NS, bytes(12))
    with pytest.raises(BagError, match='acme_msgs/msg/Frame'):
        evaluate(bag, topic='/camera/image_raw', output=tmp_path / 'report')


def test_truncated_bag_is_a_clear_error(labelled_bag, tmp_path, capsys):
    broken = tmp_path / 'broken'
    shutil.copytree(labelled_bag, broken)
    mcap = next(broken.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    with pytest.raises(SystemExit, match='fer-bag-eval: .*broken'):
        bag_eval_main([str(broken), '--output', str(tmp_path / 'report')])


def test_bad_label_file_is_a_clear_error(labelled_bag, tmp_path):
    labels = tmp_path / 'labels.csv'
    labels.write_text('start,end,label\n0.0,1.0,joyful\n')
    with pytest.raises(LabelError, match='joyful'):
        load_labels(labelled_bag, '/labels', labels)
    labels.write_text('begin,stop,label\n0.0,1.0,happy\n')
    with pytest.raises(LabelError, match='header'):
        load_labels(labelled_bag, '/labels', labels)


def test_live_replay_outlives_a_node_crash_and_counts_the_lost_frames(face_folder, model_dir, tmp_path):
    bag = tmp_path / 'long'
    bag_from_folder(face_folder, bag, rate=10.0, hold=24)  # 120 frames, 12 s
    killed = []

    def kill_at_frame_10(index, node_pid):
        if index == 10 and not killed:
            os.kill(node_pid, signal.SIGKILL)
            killed.append(node_pid)
            time.sleep(0.3)  # the crash is seen before the next frame

    run = run_live(bag, '/camera/image_raw', tmp_path / 'emotion.mcap', rate=1.0, respawn=True,
                   node_params=['model:=tiny', f'model_dir:={model_dir}', 'device:=cpu', 'video_mode:=false'],
                   before_frame=kill_at_frame_10)
    statuses = [frame.status for frame in run.frames]
    (crash,) = run.details['crashes']
    assert killed and crash['exit_code'] == -signal.SIGKILL and crash['respawned']
    assert crash['frame'] in (10, 11)
    assert crash['answered_after_s'] is not None and crash['answered_after_s'] < 30
    assert statuses[:8].count('face') >= 6  # answered before the crash
    assert 'lost' in statuses[10:] and statuses[-5:].count('face') >= 3  # lost, then the new node answers
    assert all(status in ('face', 'skipped') for status in statuses[:10])


def test_live_replay_at_twice_the_rate_gives_the_same_tracks(samples_dir, model_dir, tmp_path):
    """Tracks age in message time: a 1.5 s face-less gap ends the track at 1x and at 2x (0.75 s of wall time)."""
    face = letterbox(cv2.imread(str(samples_dir / 'single_face.jpg')), (640, 480))
    empty = letterbox(cv2.imread(str(samples_dir / 'free-mountain-vector-01.jpg')), (640, 480))
    segments = [face] * 20 + [empty] * 45 + [face] * 20  # 30 Hz: 0.67 s face, 1.5 s without, 0.67 s face
    bag = tmp_path / 'gap'
    with BagWriter(bag) as writer:
        for index, image in enumerate(segments):
            time_ns = BAG_START_NS + index * 33_333_333
            writer.write('/camera/image_raw', writer.image(image, time_ns, 'camera'), time_ns)
    params = ['model:=tiny', f'model_dir:={model_dir}', 'device:=cpu', 'video_mode:=false', 'track_max_age:=1.0']
    for rate in (1.0, 2.0):
        run = run_live(bag, '/camera/image_raw', tmp_path / f'out_{rate}.mcap', rate=rate, node_params=params)
        before = {f.faces[0].face_id for f in run.frames[:20] if f.faces}
        after = {f.faces[0].face_id for f in run.frames[65:] if f.faces}
        assert len(before) == 1 and len(after) == 1, (rate, before, after)  # one track per face segment
        assert before != after, f'at {rate}x the track survived a 1.5 s gap in message time'
