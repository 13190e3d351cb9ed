"""``fer-fuse PIXEL MESH OUTPUT``: one checkpoint that averages a pixel model and a face-mesh model.

  fer-fuse fer_ros/weights/cnn_se_fer2013 fer_ros/weights/cnn_se_gcn_facemesh_fer2013 \\
      fer_ros/weights/cnn_se_gcn_fer2013 --calibration-data ../shared/data/fer2013 \\
      --landmark-cache ../cache/landmarks

Writes OUTPUT.safetensors + OUTPUT.json (architecture ``cnn_se_gcn_fused``,
float16, the pixel branch's convolution and linear weights int8 per output
channel unless ``--float16-pixel-weights``; the branches' training-only
landmark heads left out) and, with
``--calibration-data``, OUTPUT.pixel_int8.onnx: the pixel branch quantised to
int8 by ONNX Runtime (static, per channel, activation ranges from
``--calibration-faces`` aligned training crops), which
:class:`fer_ros.model.compiled.CompiledClassifier` runs on CPUs (about 3x
faster than float). ``--pixel-graph float32`` writes OUTPUT.pixel_float32.onnx
instead: the branch in float, equal to PyTorch within 1e-4, at float's cost
(README, "A pixel branch at a quarter of the compute"). The graph's agreement with the
PyTorch branch on other crops of the same split is measured and stored in the
JSON beside its sha256.
"""
import argparse
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer_ros.data.datasets import load_samples, prepare_faces
from fer_ros.data.landmarks import LandmarkCache
from fer_ros.model.checkpoint import load_model, save_checkpoint
from fer_ros.model.cnn_se_gcn import CNNSEGCN
from fer_ros.model.compiled import softmax
from fer_ros.model.face_mesh_cnn_se_gcn import FaceMeshCNNSEGCN
from fer_ros.model.fused import FusedCNNSEGCN, FusedCNNSEGCNConfig
from fer_ros.model.metadata import checkpoint_paths, file_sha256, read_metadata
from fer_ros.training import console_script
from fer_ros.training.evaluate import evaluate_checkpoint

PIXEL_GRAPH_PRECISIONS = ('int8', 'float32')
OPSET = 17


class PixelLogits(nn.Module):
    """image -> the pixel branch's logits (what the int8 ONNX graph computes)."""

    def __init__(self, pixel: CNNSEGCN):
        super().__init__()
        self.pixel = pixel

    def forward(self, image):
        return self.pixel(image).logits


def _without_landmark_head(model) -> tuple[dict, dict]:
    """(config dict, state dict) of a branch without its training-only landmark head."""
    config = dict(model.config.to_dict(), landmark_head=False)
    state = {key: value for key, value in model.state_dict().items() if 'landmark_head.' not in key}
    return config, state


def fuse(pixel_path, mesh_path, output, pixel_weight: float = 0.5, int8_pixel_weights: bool = True
         ) -> tuple[Path, Path]:
    """Write the fused checkpoint OUTPUT (float16; the pixel branch's weights int8 per output channel with
    ``int8_pixel_weights``); returns its (weights, metadata) paths."""
    pixel, pixel_metadata = load_model(pixel_path)
    mesh, mesh_metadata = load_model(mesh_path)
    if not isinstance(pixel, CNNSEGCN) or pixel.uses_landmarks:
        raise ValueError(f'{pixel_path}: the pixel branch must be a cnn_se_gcn model without a GCN')
    if not isinstance(mesh, FaceMeshCNNSEGCN):
        raise ValueError(f'{mesh_path}: the mesh branch must be a cnn_se_gcn_facemesh model')
    if pixel_metadata['labels'] != mesh_metadata['labels']:
        raise ValueError(f'the branches have other labels: {pixel_metadata["labels"]} vs {mesh_metadata["labels"]}')
    pixel_config, pixel_state = _without_landmark_head(pixel)
    mesh_config, mesh_state = _without_landmark_head(mesh)
    fused = FusedCNNSEGCN(FusedCNNSEGCNConfig(pixel_config, mesh_config, pixel_weight))
    fused.pixel.load_state_dict(pixel_state)
    fused.mesh.load_state_dict(mesh_state)
    output = Path(output)
    branches = {role: {'source': str(path), 'name': metadata.get('name', ''),
                       'architecture': metadata['architecture'],
                       'source_weights_sha256': file_sha256(checkpoint_paths(path)[0]),
                       'metrics': metadata.get('metrics', {})}
                for role, path, metadata in (('pixel', pixel_path, pixel_metadata), ('mesh', mesh_path, mesh_metadata))}
    metadata = {'name': output.name, 'labels': list(pixel_metadata['labels']), 'branches': branches,
                'training_data': {role: metadata.get('training_data') for role, metadata in
                                  (('pixel', pixel_metadata), ('mesh', mesh_metadata))}}
    output.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(output, fused, metadata, half=True, int8_prefixes=('pixel.',) if int8_pixel_weights else ())


def calibration_crops(data, kind='fer2013', split='train', landmark_cache=None, count=512, seed=0):
    """(calibration, check) aligned crops uint8 [N, S, S]: two disjoint seeded random subsets of a split."""
    samples = load_samples(kind, data, split)
    order = np.random.default_rng(seed).permutation(len(samples))[:2 * count]
    cache = LandmarkCache(landmark_cache) if landmark_cache else None
    if cache is not None:
        cache.extract([samples.images[i] for i in order])
    faces = prepare_faces(samples.subset(order), cache)
    return faces.images[:count], faces.images[count:]


def _images(crops):
    return (np.asarray(crops, np.float32) / 255.0)[:, None]


def _export_float(pixel: CNNSEGCN, path: Path, example) -> None:
    """The pixel branch (image -> logits) as a float32 ONNX graph with a dynamic batch axis."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the TorchScript-based exporter's deprecation and tracer notes
        torch.onnx.export(PixelLogits(pixel).eval(), (torch.from_numpy(_images(example)),), str(path),
                          dynamo=False, opset_version=OPSET, input_names=['image'], output_names=['logits'],
                          dynamic_axes={'image': {0: 'faces'}, 'logits': {0: 'faces'}})


def compile_pixel_branch(model_path, check, precision='int8', calibration=None, description='') -> Path:
    """Write MODEL.pixel_<precision>.onnx for a fused checkpoint and record it (sha256, calibration,
    agreement with PyTorch on the ``check`` crops) under ``compiled.pixel_<precision>`` in the
    checkpoint's JSON, in place of any other pixel graph. int8 needs ``calibration`` crops."""
    import onnxruntime

    if precision not in PIXEL_GRAPH_PRECISIONS:
        raise ValueError(f'pixel graph precision must be one of {PIXEL_GRAPH_PRECISIONS}, not {precision!r}')
    if precision == 'int8' and calibration is None:
        raise ValueError('an int8 pixel graph needs calibration crops')
    model, _ = load_model(model_path)
    if not isinstance(model, FusedCNNSEGCN):
        raise ValueError(f'{model_path} is not a {FusedCNNSEGCN.architecture} model')
    weights_path, _ = checkpoint_paths(model_path)
    onnx_path = weights_path.with_name(f'{weights_path.stem}.pixel_{precision}.onnx')
    partial = onnx_path.with_name(f'.{onnx_path.name}.{os.getpid()}')
    if precision == 'int8':
        _quantize(model.pixel, calibration, partial)
    else:
        _export_float(model.pixel, partial, check[:2])
    os.replace(partial, onnx_path)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    compiled = softmax(session.run(None, {'image': _images(check)})[0])
    with torch.no_grad():
        reference = torch.softmax(model.pixel(torch.from_numpy(_images(check))).logits, dim=1).numpy()
    record = {
        'file': onnx_path.name, 'sha256': file_sha256(onnx_path), 'weights_sha256': file_sha256(weights_path),
        **({'calibration': {'faces': int(len(calibration)), 'data': description}} if precision == 'int8' else {}),
        'check': {'faces': int(len(check)),
                  'max_probability_difference': float(np.abs(compiled - reference).max()),
                  'mean_probability_difference': float(np.abs(compiled - reference).mean()),
                  'top1_agreement': float((compiled.argmax(1) == reference.argmax(1)).mean())},
        'onnxruntime': onnxruntime.__version__}
    others = {key: value for key, value in read_metadata(model_path).get('compiled', {}).items()
              if not key.startswith('pixel_')}
    _update_metadata(model_path, compiled=dict(others, **{f'pixel_{precision}': record}))
    for stale in PIXEL_GRAPH_PRECISIONS:
        path = weights_path.with_name(f'{weights_path.stem}.pixel_{stale}.onnx')
        if stale != precision and path.exists():
            path.unlink()
    return onnx_path


def _quantize(pixel: CNNSEGCN, calibration, output: Path) -> None:
    """The pixel branch as an int8 ONNX graph (static QDQ, per channel) calibrated on ``calibration`` crops."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Crops(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(_images(calibration), max(1, len(calibration) // 32)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {'image': batch}

    with tempfile.TemporaryDirectory() as work:
        float_path, prepared_path = Path(work) / 'pixel.onnx', Path(work) / 'pixel_prepared.onnx'
        _export_float(pixel, float_path, calibration[:2])
        quant_pre_process(str(float_path), str(prepared_path))
        quantize_static(str(prepared_path), str(output), Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _update_metadata(model_path, **entries) -> None:
    """Set top-level entries of a checkpoint's JSON (its weights, and so their sha256, unchanged)."""
    _, metadata_path = checkpoint_paths(model_path)
    metadata_path.write_text(json.dumps(dict(read_metadata(model_path), **entries), indent=2, default=str))


def record_metrics(model_path, data, split='val', landmark_cache=None) -> dict:
    """Score the fused checkpoint (PyTorch) on a FER-2013 split and store the figures under ``metrics``."""
    report = evaluate_checkpoint(model_path, data, 'fer2013', split, landmark_cache, device='cpu')
    metrics = {f'{split}_accuracy': report['accuracy'], f'{split}_macro_f1': report['macro_f1'],
               'evaluated_on': f'fer2013 {split} of {data}'}
    _update_metadata(model_path, metrics=metrics)
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(prog='fer-fuse', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('pixel', help='the pixel model (cnn_se_gcn without GCN): dir, stem, .safetensors or .json')
    parser.add_argument('mesh', help='the face-mesh model (cnn_se_gcn_facemesh)')
    parser.add_argument('output', help='output stem, e.g. fer_ros/weights/cnn_se_gcn_fer2013')
    parser.add_argument('--pixel-weight', type=float, default=0.5, help="the pixel branch's share of the mean")
    parser.add_argument('--float16-pixel-weights', action='store_true',
                        help='store the pixel branch in float16 too (default: its weights int8, 40%% smaller file)')
    parser.add_argument('--calibration-data', help='dataset whose aligned crops calibrate the int8 pixel branch '
                        '(and check the compiled pixel graph against PyTorch)')
    parser.add_argument('--pixel-graph', choices=PIXEL_GRAPH_PRECISIONS,
                        help='precision of the compiled pixel graph (default int8; float32: equal to PyTorch '
                        'within 1e-4); needs --calibration-data')
    parser.add_argument('--calibration-kind', default='fer2013', choices=['fer2013', 'fer2013_csv', 'ckplus', 'folder'])
    parser.add_argument('--calibration-split', default='train')
    parser.add_argument('--calibration-faces', type=int, default=512, help='as many more check the agreement')
    parser.add_argument('--landmark-cache', help='landmarks of the calibration and evaluation images (fer-landmarks)')
    parser.add_argument('--evaluate-data', help='dataset (fer2013 folder) whose --evaluate-split scores the fused '
                        'model into its metrics (val_accuracy, val_macro_f1)')
    parser.add_argument('--evaluate-split', default='val')
    args = parser.parse_args(argv)
    if args.pixel_graph and not args.calibration_data:
        parser.error(f'--pixel-graph {args.pixel_graph} needs --calibration-data: the graph is checked against '
                     'PyTorch on its aligned crops')
    weights, metadata_path = fuse(args.pixel, args.mesh, args.output, args.pixel_weight,
                                  int8_pixel_weights=not args.float16_pixel_weights)
    print(f'{weights} ({weights.stat().st_size / 1e6:.1f} MB), {metadata_path}')
    if args.calibration_data:
        calibration, check = calibration_crops(args.calibration_data, args.calibration_kind, args.calibration_split,
                                               args.landmark_cache, args.calibration_faces)
        description = f'{args.calibration_kind} {args.calibration_split} of {args.calibration_data}, seed 0'
        precision = args.pixel_graph or 'int8'
        onnx_path = compile_pixel_branch(args.output, check, precision, calibration, description)
        record = read_metadata(args.output)['compiled'][f'pixel_{precision}']
        print(f'{onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB): {json.dumps(record["check"])}')
    if args.evaluate_data:
        metrics = record_metrics(args.output, args.evaluate_data, args.evaluate_split, args.landmark_cache)
        print(json.dumps(metrics))
    return weights


cli = console_script(main)

if __name__ == '__main__':
    main()
