"""The Foxglove layout of fer_ros (``config/foxglove_layout.json``), built with foxglove-sdk's layout types.

  python -m fer_ros.web.foxglove_layout config/foxglove_layout.json

The panels read ``/emotion`` by the fields of fer_ros/msg/EmotionArray, which the live server
(``web_view`` with ``foxglove: true``) sends as JSON and an MCAP recording holds as ROS 2 messages,
so the same layout shows both. Two user scripts in the layout turn ``/emotion`` into face boxes on
the image (``foxglove.ImageAnnotations``) and into one probability per label name (the label order
differs between models). The image panel shows ``/emotion/image_annotated``; for a recording whose
camera topic has another name, pick it in the panel: the boxes are drawn over any image.
"""

import sys
from pathlib import Path

from fer_ros import labels as L

IMAGE_TOPIC = '/emotion/image_annotated'
EMOTION_TOPIC = '/emotion'
BOXES_TOPIC = '/studio_script/fer_face_boxes'
PROBABILITIES_TOPIC = '/studio_script/fer_probabilities'
LABELS = (L.NEUTRAL, L.HAPPY, L.SURPRISED, L.SAD, L.ANGRY, L.SCARED, L.DISGUSTED, L.CONTEMPTUOUS)

EMOTION_TYPES = '''type Face = {
  face_id: string;
  label: string;
  confidence: number;
  labels: string[];
  probabilities: number[];
  roi: { x_offset: number; y_offset: number; width: number; height: number };
};
type EmotionArray = { header: { stamp: { sec: number; nanosec: number } }; emotions: Face[] };
'''

BOXES_SCRIPT = '''// Face boxes and labels of fer_ros/EmotionArray on /emotion, as image annotations.
import { ImageAnnotations, PointsAnnotationType } from "@foxglove/schemas";

''' + EMOTION_TYPES + f'''
export const inputs = ["{EMOTION_TOPIC}"];
export const output = "{BOXES_TOPIC}";

const GREEN = {{ r: 0.24, g: 0.78, b: 0.24, a: 1 }};

export default function script(event: {{ message: EmotionArray }}): ImageAnnotations {{
  const stamp = event.message.header.stamp;
  const timestamp = {{ sec: stamp.sec, nsec: stamp.nanosec }};
  return {{
    circles: [],
    points: event.message.emotions.map((face) => {{
      const {{ x_offset: x, y_offset: y, width: w, height: h }} = face.roi;
      return {{
        timestamp,
        type: PointsAnnotationType.LINE_LOOP,
        points: [{{ x, y }}, {{ x: x + w, y }}, {{ x: x + w, y: y + h }}, {{ x, y: y + h }}],
        outline_color: GREEN,
        outline_colors: [],
        fill_color: {{ r: 0, g: 0, b: 0, a: 0 }},
        thickness: 2,
      }};
    }}),
    texts: event.message.emotions.map((face) => ({{
      timestamp,
      position: {{ x: face.roi.x_offset, y: face.roi.y_offset + face.roi.height + 16 }},
      text: `${{face.label}} ${{face.confidence.toFixed(2)}}`,
      font_size: 16,
      text_color: {{ r: 1, g: 1, b: 1, a: 1 }},
      background_color: GREEN,
    }})),
  }};
}}
'''

PROBABILITIES_SCRIPT = '''// The probabilities of the first face of /emotion by label name (the label order differs between models).
''' + EMOTION_TYPES + f'''
export const inputs = ["{EMOTION_TOPIC}"];
export const output = "{PROBABILITIES_TOPIC}";

type Probabilities = {{ face_id: string; {" ".join(f"{label}: number;" for label in LABELS)} }};

export default function script(event: {{ message: EmotionArray }}): Probabilities | undefined {{
  const face = event.message.emotions[0];
  if (!face) {{
    return undefined;
  }}
  const result: Probabilities = {{ face_id: face.face_id, {" ".join(f"{label}: 0," for label in LABELS)} }};
  face.labels.forEach((label, index) => {{
    (result as Record<string, number | string>)[label] = face.probabilities[index];
  }});
  return result;
}}
'''


def build_layout():
    """The fer_ros layout: image with face boxes | probabilities, valence/arousal and label over time."""
    import foxglove.layouts as fl

    first_face = f'{EMOTION_TOPIC}.emotions[0]'
    image = fl.ImagePanel(title='camera and faces', config=fl.ImageConfig(image_mode=fl.ImageModeConfig(
        image_topic=IMAGE_TOPIC, annotations={BOXES_TOPIC: fl.ImageAnnotationSettings(visible=True)})))
    probabilities = fl.PlotPanel(title='probabilities of the first face', config=fl.PlotConfig(
        paths=[fl.PlotSeries(value=f'{PROBABILITIES_TOPIC}.{label}', label=label) for label in LABELS],
        min_y_value=0, max_y_value=1, show_legend=True))
    affect = fl.PlotPanel(title='valence and arousal of the first face', config=fl.PlotConfig(
        paths=[fl.PlotSeries(value=f'{first_face}.valence', label='valence'),
               fl.PlotSeries(value=f'{first_face}.arousal', label='arousal')],
        min_y_value=-1, max_y_value=1, show_legend=True))
    expression = fl.StateTransitionsPanel(title='expression of the first face', config=fl.StateTransitionsConfig(
        paths=[fl.StateTransitionsSeries(value=f'{first_face}.label', label='expression')]))
    return fl.Layout(
        content=fl.SplitContainer(direction='row', items=[
            fl.SplitItem(proportion=3, content=image),
            fl.SplitItem(proportion=2, content=fl.SplitContainer(direction='column', items=[
                fl.SplitItem(content=probabilities), fl.SplitItem(content=affect),
                fl.SplitItem(content=expression)]))]),
        user_scripts={
            'fer_face_boxes': fl.UserScript(name='fer_ros face boxes', source_code=BOXES_SCRIPT),
            'fer_probabilities': fl.UserScript(name='fer_ros probabilities by label', source_code=PROBABILITIES_SCRIPT),
        })


def layout_json() -> str:
    """The layout as the JSON text of config/foxglove_layout.json (indented, newline-terminated)."""
    import json
    return json.dumps(json.loads(build_layout().to_json()), indent=2) + '\n'


def main(argv=None) -> int:
    target = Path((argv or sys.argv[1:] or ['config/foxglove_layout.json'])[0])
    target.write_text(layout_json())
    print(f'wrote {target}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
