"""``fer-bag-eval``: score fer_ros on a labelled rosbag2 bag, offline, live, or both.

  fer-bag-eval bags/fer_val --labels bags/fer_val.labels.csv                  # offline (default)
  fer-bag-eval bags/robot_run --mode live --rate 2 --output reports/robot_run
  fer-bag-eval bags/fer_val --mode both --model my_model --model-dir ~/models

Offline decodes the bag and runs the pipeline code directly: deterministic
and as fast as the machine allows. Live starts an emotion node in its own
process, replays the image topic at the recorded rate times --rate, records
what the node publishes on /emotion into <output>/live/emotion.mcap and
scores that. Labels come from the bag's label topic (std_msgs/String, default
/labels, when present) and/or an interval file (--labels; it wins where both
label a frame): see fer_ros/bag/labels.py for the format.
"""

import argparse
import json
from pathlib import Path

from fer_ros.bag.io import STRING, BagError, BagReader
from fer_ros.bag.labels import FrameLabels, LabelError, LayeredLabels, labels_from_topic, read_sidecar
from fer_ros.bag.replay import ReplayRun, run_live, run_offline
from fer_ros.bag.report import score, write_report
from fer_ros.model.checkpoint import ModelLoadError
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelNameError, ModelStore
from fer_ros.nodes.emotion_node import DEFAULT_MODEL
from fer_ros.pipeline import PipelineSettings


def image_topic(bag, topic: str | None) -> str:
    """The given topic, or the bag's only image topic."""
    with BagReader(bag) as reader:
        topics = reader.image_topics()
        if topic:
            reader.connection(topic, ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage'))
            return topic
    if len(topics) != 1:
        raise BagError(f'{bag} has {len(topics)} image topics {topics}: choose one with --topic')
    return topics[0]


def load_labels(bag, label_topic: str, sidecar) -> LayeredLabels | None:
    """Sidecar intervals first, then the label topic; None when the bag has no labels at all."""
    sources: list[FrameLabels] = []
    with BagReader(bag) as reader:
        if sidecar:
            sources.append(read_sidecar(sidecar, reader.start_time_ns))
        if reader.topics.get(label_topic) == STRING:
            messages = [(time_ns, message.data) for time_ns, message, _ in reader.messages(label_topic, (STRING,))]
            sources.append(labels_from_topic(messages, reader.end_time_ns))
    return LayeredLabels(*sources) if sources else None


def agreement(first: ReplayRun, second: ReplayRun) -> dict:
    """How often two runs give the same largest-face label on the frames both classified."""
    second_by_stamp = {f.stamp_ns: f for f in second.frames}
    both = [(f, second_by_stamp[f.stamp_ns]) for f in first.frames
            if f.primary is not None and f.stamp_ns in second_by_stamp and second_by_stamp[f.stamp_ns].primary]
    same = sum(a.primary.label == b.primary.label for a, b in both)
    return {'frames_classified_by_both': len(both), 'same_label': same,
            'agreement': same / len(both) if both else None}


def evaluate(bag, *, mode='offline', topic=None, labels_file=None, label_topic='/labels', model=DEFAULT_MODEL,
             model_dir='', device='auto', video_mode=False, mirror_average=False, rate=1.0, respawn=False,
             output='reports/bag_eval') -> dict:
    """Run the requested modes, write their reports under output/<mode>; returns a summary."""
    bag, output = Path(bag), Path(output)
    topic = image_topic(bag, topic)
    labels = load_labels(bag, label_topic, labels_file)
    runs = {}
    if mode in ('offline', 'both'):
        classifier = ExpressionClassifier(ModelStore([model_dir, SHIPPED_MODEL_DIR]).resolve(model), device=device)
        runs['offline'] = run_offline(bag, topic, classifier,
                                      PipelineSettings(video_mode=video_mode, mirror_average=mirror_average))
    if mode in ('live', 'both'):
        (output / 'live').mkdir(parents=True, exist_ok=True)
        recording = output / 'live' / 'emotion.mcap'
        if recording.exists():
            raise BagError(f'{recording} exists: choose another --output')
        params = [f'model:={model}', f'device:={device}', f'video_mode:={str(video_mode).lower()}',
                  f'mirror_average:={str(mirror_average).lower()}']
        if model_dir:
            params.append(f'model_dir:={model_dir}')
        runs['live'] = run_live(bag, topic, recording, node_params=params, rate=rate, respawn=respawn)
    summary = {'bag': str(bag), 'topic': topic, 'labelled': labels is not None, 'reports': {}}
    for name, run in runs.items():
        report = score(run, labels)
        paths = write_report(run, report, labels, output / name)
        summary['reports'][name] = {'path': str(paths['json']), 'frames': report['frames'],
                                    'accuracy': report.get('classification', {}).get('accuracy'),
                                    'macro_f1': report.get('classification', {}).get('macro_f1'),
                                    'throughput_fps': report['throughput_fps']}
    if len(runs) == 2:
        summary['agreement'] = agreement(runs['offline'], runs['live'])
    output.mkdir(parents=True, exist_ok=True)
    (output / 'summary.json').write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='fer-bag-eval', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('bag', type=Path, help='rosbag2 bag folder or .mcap/.db3 file')
    parser.add_argument('--mode', choices=['offline', 'live', 'both'], default='offline')
    parser.add_argument('--topic', help='image topic (default: the only image topic of the bag)')
    parser.add_argument('--labels', type=Path, help='interval label file (CSV start,end,label or YAML)')
    parser.add_argument('--label-topic', default='/labels', help='std_msgs/String label topic in the bag')
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--model-dir', default='', help='model directory searched before the shipped weights')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    parser.add_argument('--video-mode', action='store_true',
                        help='MediaPipe tracking between frames (for continuous video; off for dataset bags)')
    parser.add_argument('--mirror-average', action='store_true',
                        help="average each face's probabilities with its mirror image's (the node's parameter)")
    parser.add_argument('--rate', type=float, default=1.0, help='live: multiple of the recorded rate')
    parser.add_argument('--respawn', action='store_true',
                        help='live: restart the node if it dies during the replay (frames meanwhile count as lost)')
    parser.add_argument('--output', type=Path, default=Path('reports/bag_eval'))
    args = parser.parse_args(argv)
    try:
        summary = evaluate(args.bag, mode=args.mode, topic=args.topic, labels_file=args.labels,
                           label_topic=args.label_topic, model=args.model, model_dir=args.model_dir,
                           device=args.device, video_mode=args.video_mode, mirror_average=args.mirror_average,
                           rate=args.rate, respawn=args.respawn,
                           output=args.output)
    except (BagError, LabelError, ModelNameError, ModelLoadError, ValueError) as error:
        raise SystemExit(f'fer-bag-eval: {error}') from None
    for name, result in summary['reports'].items():
        frames = result['frames']
        scored = '' if result['accuracy'] is None else \
            f", accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f}"
        print(f"{name}: {frames['total']} frames ({frames['face']} face, {frames['no_face']} no face, "
              f"{frames['skipped']} skipped, {frames['lost']} lost, {frames['bad']} bad), "
              f"{result['throughput_fps']:.1f} frames/s"
              f"{scored} -> {result['path']}")
    if 'agreement' in summary:
        agree = summary['agreement']
        print(f"offline vs live: same label on {agree['same_label']}/{agree['frames_classified_by_both']} frames")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
