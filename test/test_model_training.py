"""A short real training run on a few dozen FER-2013 images lowers the loss and resumes exactly."""
import csv
from pathlib import Path

import pytest
import torch

from fer_ros.data.datasets import load_samples, prepare_faces
from fer_ros.data.landmarks import LandmarkCache
from fer_ros.data.splits import subject_kfold
from fer_ros.model.checkpoint import ModelLoadError, load_model, read_metadata
from fer_ros.model.export import export
from fer_ros.training.evaluate import main as evaluate_main
from fer_ros.training.ablation import run_ablation
from fer_ros.training.kfold import run_kfold
from fer_ros.training.train import load_config, train

REPO = Path(__file__).resolve().parents[1]
FER2013 = REPO.parent / 'shared' / 'data' / 'fer2013'
TINY_MODEL = ['model.cnn_widths=[8,16,16,16]', 'model.gcn_widths=[8,8]', 'model.geometry_dim=8',
              'model.fusion_dim=16', 'model.dropout=0.0']


def quick_config(tmp_path, epochs):
    overrides = TINY_MODEL + [
        f'output_dir={tmp_path / "run"}', f'data.path={FER2013}', f'data.landmark_cache={tmp_path / "cache"}',
        'data.max_per_class=6', f'train.epochs={epochs}', 'train.batch_size=14', 'train.num_workers=0',
        'train.lr=0.01', 'train.device=cpu', 'augment.erase_probability=0.0']
    return load_config(REPO / 'config' / 'train_fer2013.yaml', overrides)


def train_losses(run_dir):
    with open(run_dir / 'metrics.csv') as handle:
        return [float(row['train_focal']) for row in csv.DictReader(handle)]


def test_short_training_lowers_loss_and_resumes(tmp_path):
    if not FER2013.is_dir():
        pytest.skip(f'FER-2013 data not found at {FER2013}')
    torch.set_num_threads(1)
    train(quick_config(tmp_path, epochs=3))
    losses = train_losses(tmp_path / 'run')
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    model, metadata = load_model(tmp_path / 'run' / 'best')
    assert metadata['labels'][0] == 'angry' and metadata['metrics']['epoch'] >= 1

    train(quick_config(tmp_path, epochs=4), resume=True)
    assert len(train_losses(tmp_path / 'run')) == 4

    # fer-export --last-epoch: the weights of last.pt, the last epoch's metrics; a plain folder is refused
    export(tmp_path / 'run', tmp_path / 'last_epoch', half=False, last_epoch=True)
    last_model, last_metadata = load_model(tmp_path / 'last_epoch')
    trained = torch.load(tmp_path / 'run' / 'last.pt', weights_only=True)['model']
    assert all(torch.equal(last_model.state_dict()[key], value) for key, value in trained.items())
    assert last_metadata['epoch'] == last_metadata['metrics']['epoch'] == 4
    with pytest.raises(ModelLoadError, match='no last.pt'):
        export(tmp_path / 'cache', tmp_path / 'nothing', last_epoch=True)

    small = tmp_path / 'small'
    for folder in sorted((FER2013 / 'val').iterdir()):
        (small / 'val' / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob('*.jpg'))[:3]:
            (small / 'val' / folder.name / image.name).symlink_to(image)
    report = evaluate_main([str(tmp_path / 'run' / 'best'), str(small), '--split', 'val',
                            '--landmark-cache', str(tmp_path / 'cache'), '--output', str(tmp_path / 'eval'),
                            '--device', 'cpu'])
    assert 0 <= report['accuracy'] <= 1 and (tmp_path / 'eval' / 'confusion_matrix.png').exists()
    assert report['protocol'] == 'crops' and report['num_samples'] == 21
    rows = (tmp_path / 'eval' / 'predictions.csv').read_text().splitlines()
    assert len(rows) == 22 and all(row.split(',')[2] for row in rows[1:])  # every crop is scored


TINY_PCNN = ['model.local_widths=[8,8]', 'model.global_widths=[8,8,16]', 'model.feature_dim=16', 'model.heads=2']
KFOLD_CONFIGS = {
    'cnn_se_gcn': ('train_ckplus.yaml', TINY_MODEL + [
        'model.use_gcn=false', 'model.landmark_head=false',
        'loss.weights={focal: 1.0, geometry: 0, adversarial: 0, fgsm: 0}']),
    'pcnn': ('train_ckplus_pcnn.yaml', TINY_PCNN),
}


@pytest.mark.parametrize('architecture', list(KFOLD_CONFIGS))
def test_ckplus_kfold_reports_every_fold_with_disjoint_subjects(tmp_path, architecture):
    ckplus = REPO.parent / 'shared' / 'data' / 'ckplus48'
    if not ckplus.is_dir():
        pytest.skip(f'CK+ data not found at {ckplus}')
    torch.set_num_threads(1)
    config_file, overrides = KFOLD_CONFIGS[architecture]
    config = load_config(REPO / 'config' / config_file, overrides + [
        f'output_dir={tmp_path / "kfold"}', f'data.path={ckplus}', f'data.landmark_cache={tmp_path / "cache"}',
        'data.max_per_class=8', 'num_folds=2', 'train.epochs=1', 'train.num_workers=0', 'train.device=cpu'])
    summary = run_kfold(config)
    assert read_metadata(tmp_path / 'kfold' / 'fold_0' / 'best')['architecture'] == architecture
    assert [fold['fold'] for fold in summary['folds']] == [0, 1]
    first, second = (set(fold['test_subjects']) for fold in summary['folds'])
    assert first and second and not first & second
    for key in ('val_accuracy', 'last_val_accuracy'):
        assert 0 <= summary['mean'][key] <= 1 and summary['std'][key] >= 0
    assert (tmp_path / 'kfold' / 'kfold_report.json').is_file()


def test_rotating_validation_chooses_on_the_next_fold_and_scores_the_test_fold_once(tmp_path):
    ckplus = REPO.parent / 'shared' / 'data' / 'ckplus48'
    if not ckplus.is_dir():
        pytest.skip(f'CK+ data not found at {ckplus}')
    torch.set_num_threads(1)
    config_file, overrides = KFOLD_CONFIGS['cnn_se_gcn']
    config = load_config(REPO / 'config' / config_file, overrides + [
        f'output_dir={tmp_path / "kfold"}', f'data.path={ckplus}', f'data.landmark_cache={tmp_path / "cache"}',
        'data.max_per_class=8', 'num_folds=3', 'kfold_validation=rotating', 'train.epochs=2',
        'train.num_workers=0', 'train.device=cpu'])
    summary = run_kfold(config)
    assert summary['validation'] == 'rotating' and len(summary['folds']) == 3
    assert summary['seed'] == 0 and summary['num_folds'] == 3
    samples = load_samples('ckplus', ckplus)
    folds = subject_kfold(samples.subjects, samples.labels, 3, 0)
    for fold, row in enumerate(summary['folds']):
        assert set(row['test_subjects']) == set(samples.subjects[folds[fold][1]])
        assert set(row['val_subjects']) == set(samples.subjects[folds[(fold + 1) % 3][1]])
        # the checkpoint was chosen on the validation fold; the held-out fold is scored with it afterwards
        faces = prepare_faces(samples.subset(folds[fold][1]), LandmarkCache(tmp_path / 'cache'))
        model = load_model(tmp_path / 'kfold' / f'fold_{fold}' / 'best')[0].eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(faces.images.astype('float32') / 255)[:, None], None).logits
        assert row['test_accuracy'] == pytest.approx((logits.argmax(1).numpy() == faces.labels).mean())
        assert 0 <= row['last_test_accuracy'] <= 1 and 0 <= row['val_accuracy'] <= 1
    for key in ('test_accuracy', 'last_test_accuracy', 'test_macro_f1', 'val_accuracy'):
        assert key in summary['mean'] and key in summary['std']


def test_ablation_trains_each_variant_and_writes_the_table(tmp_path):
    if not FER2013.is_dir():
        pytest.skip(f'FER-2013 data not found at {FER2013}')
    torch.set_num_threads(1)
    overrides = TINY_MODEL + [f'data.path={FER2013}', f'data.landmark_cache={tmp_path / "cache"}',
                              'data.max_per_class=4', 'train.epochs=1', 'train.batch_size=14',
                              'train.num_workers=0', 'train.device=cpu']
    rows = run_ablation(REPO / 'config' / 'train_fer2013.yaml', tmp_path / 'ablation', overrides,
                        variants=('cnn', '+geometry'))
    assert [row['variant'] for row in rows] == ['cnn', '+geometry']
    assert rows[0]['parameters'] < rows[1]['parameters']  # the GCN branch and landmark head add weights
    table = (tmp_path / 'ablation' / 'ablation.md').read_text()
    assert '| cnn |' in table and '| +geometry |' in table
    # A second run reuses the finished variants.
    assert run_ablation(REPO / 'config' / 'train_fer2013.yaml', tmp_path / 'ablation', overrides,
                        variants=('cnn', '+geometry')) == rows


def test_fer_train_trains_the_pcnn_baseline(tmp_path):
    if not FER2013.is_dir():
        pytest.skip(f'FER-2013 data not found at {FER2013}')
    torch.set_num_threads(1)
    config = load_config(REPO / 'config' / 'train_fer2013_pcnn.yaml', [
        f'output_dir={tmp_path / "pcnn"}', f'data.path={FER2013}', f'data.landmark_cache={tmp_path / "cache"}',
        'data.max_per_class=4', *TINY_PCNN, 'train.epochs=2', 'train.batch_size=14', 'train.num_workers=0',
        'train.device=cpu'])
    train(config)
    with open(tmp_path / 'pcnn' / 'metrics.csv') as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and float(rows[0]['train_reconstruction']) > 0
    model, metadata = load_model(tmp_path / 'pcnn' / 'best')
    assert metadata['architecture'] == 'pcnn' and model.uses_landmarks


def test_fer_train_runs_the_efficientnet_recipe(tmp_path):
    if not FER2013.is_dir():
        pytest.skip(f'FER-2013 data not found at {FER2013}')
    torch.set_num_threads(1)
    config = load_config(REPO / 'config' / 'train_fer2013_efficientnet.yaml', [
        f'output_dir={tmp_path / "effnet"}', f'data.path={FER2013}', f'data.landmark_cache={tmp_path / "cache"}',
        'data.max_per_class=2', 'train.epochs=2',
        'train.warmup_epochs=1', 'train.batch_size=14', 'train.num_workers=0', 'train.device=cpu'])
    train(config)
    with open(tmp_path / 'effnet' / 'metrics.csv') as handle:
        rates = [float(row['lr']) for row in csv.DictReader(handle)]
    assert rates[0] == pytest.approx(0.1 * config['train']['lr'])  # the warm-up stage
    model, metadata = load_model(tmp_path / 'effnet' / 'best')
    assert metadata['architecture'] == 'efficientnet_b2' and not model.uses_landmarks
    assert metadata['training_data']['val_from_train'] == '0.125'
