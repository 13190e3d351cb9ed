"""``fer-make-bag``: labelled evaluation bags from an image dataset or a video.

  fer-make-bag folder ../shared/data/fer2013/val bags/fer_val --per-class 20
  fer-make-bag video face.mp4 bags/face --labels face_labels.csv

A bag holds the camera frames on ``--topic`` (sensor_msgs/Image, or
CompressedImage with --compressed) and the ground truth on ``--label-topic``
(std_msgs/String, the label from each message until the next; "" ends it).
The same labels are written beside the bag as ``<bag>.labels.csv`` (start,
end, label; seconds since the bag start). Dataset faces are scaled to
``--face-size`` pixels and centred in a ``--size`` frame whose surround repeats
the image's border pixels (``--background`` for a plain gray); each image is
shown for ``--hold`` frames. Video frames are letterboxed to ``--size``. Stamps start
at a fixed time, so the same inputs always give the same bag (MCAP default).
"""

import argparse
from pathlib import Path

import cv2

from fer_ros.bag.io import BagError, BagWriter
from fer_ros.bag.labels import read_sidecar, write_sidecar_csv
from fer_ros.data.datasets import folder_samples
from fer_ros.vision.frame_source import FrameSource
from fer_ros.vision.framing import letterbox, place_face

BAG_START_NS = 1_700_000_000 * 1_000_000_000


def sidecar_path(bag: Path) -> Path:
    return bag.with_name(bag.name + '.labels.csv')


def dataset_selection(root, per_class: int | None) -> list[tuple[Path, str]]:
    """(image, label) pairs, round-robin over classes, at most per_class of each."""
    samples = folder_samples(root)
    by_class = [[p for p, label in zip(samples.images, samples.labels) if label == index][:per_class]
                for index in range(len(samples.class_names))]
    selection = []
    for rank in range(max((len(paths) for paths in by_class), default=0)):
        for index, paths in enumerate(by_class):
            if rank < len(paths):
                selection.append((paths[rank], samples.class_names[index]))
    return selection


def bag_from_folder(root, bag, *, per_class=None, rate=10.0, hold=1, size=(640, 480), face_size=240,
                    background=None, topic='/camera/image_raw', label_topic='/labels', frame_id='camera',
                    compressed=False, storage='mcap') -> dict:
    """Write a labelled bag of dataset faces; returns counts."""
    selection = dataset_selection(root, per_class)
    if not selection:
        raise BagError(f'no labelled images in {root}')
    bag, period_ns = Path(bag), round(1e9 / rate)
    intervals, frames = [], 0
    with BagWriter(bag, storage) as writer:
        for image_index, (path, label) in enumerate(selection):
            face = cv2.imread(str(path))
            if face is None:
                raise BagError(f'cannot read image {path}')
            frame = place_face(face, size, face_size, background)
            start_ns = BAG_START_NS + frames * period_ns
            writer.write(label_topic, writer.string(label), start_ns)
            for _ in range(hold):
                time_ns = BAG_START_NS + frames * period_ns
                writer.write(topic, writer.image(frame, time_ns, frame_id, compressed), time_ns)
                frames += 1
            intervals.append(((start_ns - BAG_START_NS) / 1e9, frames * period_ns / 1e9, label))
    write_sidecar_csv(sidecar_path(bag), intervals)
    return {'images': len(selection), 'frames': frames, 'bag': str(bag), 'labels': str(sidecar_path(bag))}


def bag_from_video(video, bag, labels_file=None, *, rate=None, size=(640, 480), topic='/camera/image_raw',
                   label_topic='/labels', frame_id='camera', compressed=False, storage='mcap') -> dict:
    """Write a bag of a video's frames, labelled by an interval file in video seconds (optional)."""
    source = FrameSource(str(video))
    native = source.native_rate or 30.0
    rate = rate or native
    labels = read_sidecar(labels_file, BAG_START_NS) if labels_file else None
    bag, frames, next_output = Path(bag), 0, 0.0
    last_label = None
    with BagWriter(bag, storage) as writer:
        for source_index, image in enumerate(source.frames()):
            video_time = source_index / native
            if video_time + 1e-9 < next_output:  # resample to the output rate
                continue
            next_output += 1.0 / rate
            time_ns = BAG_START_NS + round(video_time * 1e9)
            if labels is not None:
                label = labels.label_at(time_ns) or ''
                if label != last_label:
                    writer.write(label_topic, writer.string(label), time_ns)
                    last_label = label
            writer.write(topic, writer.image(letterbox(image, size), time_ns, frame_id, compressed), time_ns)
            frames += 1
    source.close()
    if frames == 0:
        raise BagError(f'no frames in video {video}')
    if labels is not None:
        write_sidecar_csv(sidecar_path(bag), [((i.start_ns - BAG_START_NS) / 1e9, (i.end_ns - BAG_START_NS) / 1e9,
                                                i.label) for i in labels.intervals])
    return {'frames': frames, 'bag': str(bag), 'labels': str(sidecar_path(bag)) if labels else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='fer-make-bag', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sources = parser.add_subparsers(dest='source', required=True)
    folder = sources.add_parser('folder', help='image dataset with one folder per class')
    folder.add_argument('dataset', type=Path)
    folder.add_argument('--per-class', type=int, default=None, help='at most this many images per class')
    folder.add_argument('--hold', type=int, default=1, help='frames per image')
    folder.add_argument('--face-size', type=int, default=240, help='face size in pixels in the frame')
    folder.add_argument('--background', type=int, default=None,
                        help='gray level around the face (0-255); default: repeat the image border')
    video = sources.add_parser('video', help='a video, optionally with an interval label file')
    video.add_argument('video', type=Path)
    video.add_argument('--labels', type=Path, help='CSV/YAML intervals (start, end, label) in video seconds')
    for sub in (folder, video):
        sub.add_argument('bag', type=Path, help='output bag folder (must not exist)')
        sub.add_argument('--rate', type=float, default=None, help='frames per second (folder: 10; video: its own)')
        sub.add_argument('--size', type=int, nargs=2, default=[640, 480], metavar=('WIDTH', 'HEIGHT'))
        sub.add_argument('--topic', default='/camera/image_raw')
        sub.add_argument('--label-topic', default='/labels')
        sub.add_argument('--frame-id', default='camera')
        sub.add_argument('--compressed', action='store_true', help='sensor_msgs/CompressedImage (jpeg)')
        sub.add_argument('--storage', choices=['mcap', 'sqlite3'], default='mcap')
    args = parser.parse_args(argv)
    common = dict(size=tuple(args.size), topic=args.topic, label_topic=args.label_topic, frame_id=args.frame_id,
                  compressed=args.compressed, storage=args.storage)
    try:
        if args.source == 'folder':
            result = bag_from_folder(args.dataset, args.bag, per_class=args.per_class, rate=args.rate or 10.0,
                                     hold=args.hold, face_size=args.face_size, background=args.background,
                                     **common)
        else:
            result = bag_from_video(args.video, args.bag, args.labels, rate=args.rate, **common)
    except (BagError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f'fer-make-bag: {error}') from None
    print(', '.join(f'{k}: {v}' for k, v in result.items()))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
