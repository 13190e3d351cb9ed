"""Score a replay against the bag's labels and write report.json, report.md and PNG plots."""

import json
from pathlib import Path

import numpy as np

from fer_ros.bag.replay import STATUSES, ReplayRun
from fer_ros.training.evaluate import classification_report, plot_confusion_matrix


def _distribution(values) -> dict | None:
    values = np.asarray([v for v in values if v is not None], np.float64)
    if not len(values):
        return None
    return {'count': int(len(values)), 'mean_ms': 1e3 * float(values.mean()),
            'median_ms': 1e3 * float(np.median(values)), 'p95_ms': 1e3 * float(np.percentile(values, 95)),
            'max_ms': 1e3 * float(values.max())}


def score(run: ReplayRun, labels) -> dict:
    """Frame accounting, classification metrics on labelled frames with a face, latency and throughput."""
    frames = run.frames
    counts = {status: sum(f.status == status for f in frames) for status in STATUSES}
    class_names = next((f.primary.labels for f in frames if f.primary is not None), ())
    truth = [labels.label_at(f.stamp_ns) if labels is not None else None for f in frames]
    labelled = [t is not None for t in truth]
    report = {
        'mode': run.mode, 'topic': run.topic, 'model': run.model, **run.details,
        'frames': {'total': len(frames), **counts, 'labelled': int(sum(labelled)),
                   'accounted': sum(counts.values()) == len(frames)},
        'throughput_fps': len(frames) / run.wall_seconds if run.wall_seconds > 0 else None,
        'wall_seconds': run.wall_seconds,
        ('latency' if run.mode == 'live' else 'processing_time'): _distribution(f.latency_s for f in frames),
    }
    scored = [(t, f.primary) for t, f in zip(truth, frames) if t is not None and f.primary is not None]
    unknown = sorted({t for t, _ in scored} - set(class_names))
    if unknown:
        report['warning'] = f'labels {unknown} are not classes of the model {list(class_names)}; not scored'
        scored = [(t, face) for t, face in scored if t in class_names]
    report['why_without_result'] = {
        'no_face': 'no face found in the frame (an empty EmotionArray)',
        'skipped': 'the node was busy and took a newer frame of the topic instead (newest-frame policy)',
        'lost': 'sent while the node was down: after it crashed, until a restarted node answered',
        'bad': sorted({f.error for f in frames if f.status == 'bad'}),
    }
    report['labelled_frames_without_result'] = {
        status: sum(1 for t, f in zip(truth, frames) if t is not None and f.status == status)
        for status in ('no_face', 'skipped', 'lost', 'bad')}
    if scored:
        targets = np.array([class_names.index(t) for t, _ in scored])
        probabilities = np.stack([face.probabilities for _, face in scored])
        report['classification'] = classification_report(probabilities, targets, list(class_names))
        report['class_names'] = list(class_names)
    return report


def write_report(run: ReplayRun, report: dict, labels, output) -> dict[str, Path]:
    """report.json, report.md, confusion_matrix.png, latency.png and timeline.png in output."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = {'json': output / 'report.json', 'markdown': output / 'report.md'}
    if 'classification' in report:
        paths['confusion_matrix'] = output / 'confusion_matrix.png'
        plot_confusion_matrix(report['classification']['confusion_matrix'], report['class_names'],
                              paths['confusion_matrix'], f'{run.model}, {run.mode} replay of {run.topic}')
    latencies = [f.latency_s for f in run.frames if f.latency_s is not None]
    if latencies:
        paths['latency'] = output / 'latency.png'
        _plot_latency(latencies, run.mode, paths['latency'])
    if any(f.faces for f in run.frames):
        paths['timeline'] = output / 'timeline.png'
        _plot_timeline(run, labels, paths['timeline'])
    report['files'] = {key: path.name for key, path in paths.items()}
    paths['json'].write_text(json.dumps(report, indent=2))
    paths['markdown'].write_text(markdown(report))
    return paths


def markdown(report: dict) -> str:
    frames = report['frames']
    lines = [f"# fer_ros bag evaluation: {report['model']} ({report['mode']})", '',
             f"Topic `{report['topic']}`: {frames['total']} frames, {frames['labelled']} labelled; "
             f"{frames['face']} with a face, {frames['no_face']} without, {frames['skipped']} skipped, "
             f"{frames['lost']} lost, {frames['bad']} undecodable.", '']
    for crash in report.get('crashes', []):
        answered = ('never answered again' if crash['answered_after_s'] is None
                    else f"a node answered {crash['answered_after_s']:.1f} s later")
        lines.append(f"The node died (exit code {crash['exit_code']}) before frame {crash['frame']}"
                     f"{', was restarted' if crash['respawned'] else ''}; {answered}.")
    if report.get('throughput_fps'):
        lines.append(f"Throughput: {report['throughput_fps']:.1f} frames/s over {report['wall_seconds']:.1f} s.")
    timing = report.get('latency') or report.get('processing_time')
    if timing:
        name = 'Latency (frame sent to result received)' if report['mode'] == 'live' else 'Processing time per frame'
        lines.append(f"{name}: median {timing['median_ms']:.1f} ms, p95 {timing['p95_ms']:.1f} ms, "
                     f"max {timing['max_ms']:.1f} ms.")
    if 'warning' in report:
        lines += ['', f"**Warning:** {report['warning']}"]
    if 'classification' in report:
        metrics = report['classification']
        lines += ['', f"Accuracy **{metrics['accuracy']:.4f}**, macro-F1 **{metrics['macro_f1']:.4f}** on "
                      f"{metrics['num_samples']} labelled frames with a face (largest face per frame).", '',
                  '| class | precision | recall | F1 | support |', '|---|---|---|---|---|']
        for name, row in metrics['per_class'].items():
            lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | "
                         f"{row['support']} |")
    lines += ['', 'Files: ' + ', '.join(f'`{name}`' for name in report.get('files', {}).values()), '']
    return '\n'.join(lines)


def _plot_latency(latencies, mode: str, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist(1e3 * np.asarray(latencies), bins=40, color='tab:blue')
    axes.set_xlabel('frame sent -> result received (ms)' if mode == 'live' else 'processing time per frame (ms)')
    axes.set_ylabel('frames')
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_timeline(run: ReplayRun, labels, path: Path) -> None:
    """Predicted label of each track over time, with the ground truth behind it."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    class_names = next(f.primary.labels for f in run.frames if f.primary is not None)
    start = run.frames[0].stamp_ns
    figure, axes = plt.subplots(figsize=(10, 4))
    if labels is not None:
        truth = [((f.stamp_ns - start) * 1e-9, labels.label_at(f.stamp_ns)) for f in run.frames]
        truth = [(time_s, class_names.index(label)) for time_s, label in truth if label in class_names]
        if truth:
            axes.scatter(*zip(*truth), s=60, color='lightgray', label='label', zorder=1)
    tracks: dict[str, list[tuple[float, int]]] = {}
    for frame in run.frames:
        for face in frame.faces:
            tracks.setdefault(face.face_id, []).append(((frame.stamp_ns - start) * 1e-9,
                                                        class_names.index(face.label)))
    for face_id, points in sorted(tracks.items(), key=lambda item: -len(item[1]))[:8]:
        times, values = zip(*points)
        axes.plot(times, values, marker='.', linewidth=0.8, label=face_id, zorder=2)
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel('seconds since the first frame')
    axes.legend(loc='upper right', fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
