"""Mirror averaging: each face classified with its mirror image in one batch and the two averaged, the same in
the pipeline, in evaluation and in the node (its ``mirror_average`` parameter, changeable at run time)."""

import shutil

import cv2
import numpy as np
import pytest
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter
from torch.utils.data import DataLoader

from fer_ros.data.datasets import FaceDataset, PreparedFaces
from fer_ros.labels import FER2013_LABELS
from fer_ros.model.compiled import CompiledClassifier
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model_store import SHIPPED_MODEL_DIR
from fer_ros.pipeline import EmotionPipeline, PipelineSettings
from fer_ros.training.evaluate import evaluate_checkpoint, predict_loader
from fer_ros.vision.mirror import hflip, hflip_landmarks, mirror_averaged
from model_fixtures import LABELLED_PHOTOS, aligned_photo_faces
from node_harness import running_emotion_node

MESH_MODEL = 'cnn_se_gcn_facemesh_fer2013'  # the fastest shipped model that reads landmarks
PHOTO = '0-f1-su-ph.jpg'


@pytest.fixture(scope='module')
def real_faces(samples_dir):
    return aligned_photo_faces(samples_dir)


@pytest.fixture(scope='module')
def compiled_mesh_model():
    return CompiledClassifier(SHIPPED_MODEL_DIR / f'{MESH_MODEL}.safetensors')


def test_mirroring_a_batch_of_landmarks_mirrors_each_face_and_twice_gives_them_back(real_faces):
    crops, landmarks = real_faces
    mirrored = hflip_landmarks(landmarks, 48)
    for crop, points, mirrored_points in zip(crops, landmarks, mirrored):
        assert np.array_equal(hflip(crop, points)[1], mirrored_points)
    np.testing.assert_allclose(hflip_landmarks(mirrored, 48), landmarks, atol=1e-6)


def test_the_average_is_the_mean_over_face_and_mirror_image_and_the_same_for_both(real_faces, compiled_mesh_model):
    crops, landmarks = real_faces
    mirror_crops, mirror_landmarks = np.ascontiguousarray(crops[:, :, ::-1]), hflip_landmarks(landmarks, 48)
    plain = compiled_mesh_model.predict(crops, landmarks)
    of_mirror = compiled_mesh_model.predict(mirror_crops, mirror_landmarks)
    assert np.abs(plain - of_mirror).max() > 1e-3  # the model alone answers a mirrored face differently
    averaged = mirror_averaged(compiled_mesh_model.predict, crops, landmarks)
    np.testing.assert_allclose(averaged, (plain + of_mirror) / 2, atol=1e-5)
    np.testing.assert_allclose(mirror_averaged(compiled_mesh_model.predict, mirror_crops, mirror_landmarks),
                               averaged, atol=1e-5)
    assert [FER2013_LABELS[i] for i in averaged.argmax(axis=1)[:2]] == ['happy', 'surprised']
    assert mirror_averaged(compiled_mesh_model.predict, crops[:0], landmarks[:0]).shape == (0, 7)


def test_evaluation_scores_the_mirror_average_the_classifier_gives(real_faces):
    crops, landmarks = real_faces
    classifier = ExpressionClassifier(SHIPPED_MODEL_DIR / f'{MESH_MODEL}.safetensors', device='cpu')
    faces = PreparedFaces(crops, landmarks, np.ones(len(crops), bool), np.arange(len(crops)), FER2013_LABELS)
    loader = DataLoader(FaceDataset(faces), batch_size=3)
    probabilities, labels = predict_loader(classifier.model, loader, 'cpu', mirror_average=True)
    assert labels.tolist() == list(range(len(crops)))
    np.testing.assert_allclose(probabilities, mirror_averaged(classifier.predict, crops, landmarks), atol=1e-5)
    plain, _ = predict_loader(classifier.model, loader, 'cpu')
    np.testing.assert_allclose(plain, classifier.predict(crops, landmarks), atol=1e-5)


def test_fer_eval_mirror_averages_in_both_runtimes_and_attacks_only_the_model_alone(samples_dir, tmp_path):
    folder = tmp_path / 'photos'
    for photo, label in zip(LABELLED_PHOTOS, ('happy', 'surprised', 'angry', 'disgusted')):
        (folder / label).mkdir(parents=True)
        shutil.copy(samples_dir / photo, folder / label / photo)
    weights = SHIPPED_MODEL_DIR / f'{MESH_MODEL}.safetensors'
    reports = {(compiled, mirror): evaluate_checkpoint(weights, folder, 'folder', landmark_cache=tmp_path / 'landmarks',
                                                       device='cpu', compiled=compiled, mirror_average=mirror)
               for compiled in (False, True) for mirror in (False, True)}
    assert [report['mirror_average'] for report in reports.values()] == [False, True, False, True]
    for mirror in (False, True):  # the face-mesh model compiles to within 1e-4 of PyTorch
        np.testing.assert_allclose(reports[True, mirror]['probabilities'], reports[False, mirror]['probabilities'],
                                   atol=1e-4)
    assert np.abs(reports[False, True]['probabilities'] - reports[False, False]['probabilities']).max() > 1e-3
    with pytest.raises(ValueError, match='without --mirror-average'):
        evaluate_checkpoint(weights, folder, 'folder', landmark_cache=tmp_path / 'landmarks', device='cpu',
                            mirror_average=True, attack_epsilon=2)


def test_the_pipeline_setting_switches_mirror_averaging_from_the_next_frame(samples_dir, compiled_mesh_model):
    image = cv2.imread(str(samples_dir / PHOTO))
    pipeline = EmotionPipeline(compiled_mesh_model, PipelineSettings(video_mode=False))
    try:
        (plain,) = pipeline.process(image)
        crops, landmarks = pipeline.seen_faces()
        pipeline.update_settings(PipelineSettings(video_mode=False, mirror_average=True))
        (averaged,) = pipeline.process(image)
    finally:
        pipeline.close()
    np.testing.assert_allclose(plain.probabilities, compiled_mesh_model.predict(crops, landmarks)[0], atol=1e-5)
    np.testing.assert_allclose(averaged.probabilities,
                               mirror_averaged(compiled_mesh_model.predict, crops, landmarks)[0], atol=1e-5)
    assert averaged.label == 'surprised'


def test_the_node_parameter_turns_mirror_averaging_on_while_it_runs(samples_dir, compiled_mesh_model):
    image = cv2.imread(str(samples_dir / PHOTO))
    crops, landmarks = aligned_photo_faces(samples_dir, (PHOTO,))
    with running_emotion_node([Parameter('video_mode', value=False), Parameter('model', value=MESH_MODEL)]) \
            as (node, camera):
        (plain,) = camera.result(camera.send(image)).emotions
        (result,) = node.set_parameters([Parameter('mirror_average', value=True)])
        assert isinstance(result, SetParametersResult) and result.successful, result.reason
        (averaged,) = camera.result(camera.send(image)).emotions
    assert plain.model == averaged.model == MESH_MODEL
    np.testing.assert_allclose(plain.probabilities, compiled_mesh_model.predict(crops, landmarks)[0], atol=1e-5)
    np.testing.assert_allclose(averaged.probabilities,
                               mirror_averaged(compiled_mesh_model.predict, crops, landmarks)[0], atol=1e-5)
