"""The Foxglove layout and the live server's messages agree with fer_ros/msg/EmotionArray (what an MCAP
recording from fer-bag-eval holds), so one layout shows both. The live server itself is tested in
test_web_view.py."""

import json
import re
from pathlib import Path

from fer_ros.msg import EmotionArray, EmotionStamped
from fer_ros.nodes.web_view import emotion_result
from fer_ros.web.foxglove_bridge import EMOTION_SCHEMA, emotion_array_json
from fer_ros.web.foxglove_layout import BOXES_TOPIC, EMOTION_TOPIC, IMAGE_TOPIC, PROBABILITIES_TOPIC, layout_json

REPO = Path(__file__).resolve().parents[1]
LAYOUT_FILE = REPO / 'config' / 'foxglove_layout.json'


def real_message() -> EmotionArray:
    # Values with more than 4 decimals: what the page and Foxglove show is rounded once, from these.
    face = EmotionStamped(face_id='face_1a2b3c', label='happy', confidence=0.86503, labels=['happy', 'sad'],
                          probabilities=[0.86503, 0.13497], valence=0.25003, arousal=-0.50007,
                          model='pcnn_fer2013')
    face.header.stamp.sec, face.header.stamp.nanosec, face.header.frame_id = 1700000000, 42, 'camera'
    face.roi.x_offset, face.roi.y_offset, face.roi.width, face.roi.height = 10, 20, 110, 120
    return EmotionArray(header=face.header, emotions=[face])


def test_the_committed_layout_is_what_the_generator_builds():
    assert LAYOUT_FILE.read_text() == layout_json(), \
        'config/foxglove_layout.json is stale: python -m fer_ros.web.foxglove_layout config/foxglove_layout.json'


def test_live_messages_have_the_fields_and_values_of_the_ros_message():
    message = real_message()
    sent = emotion_array_json(emotion_result(message))
    assert set(sent) == set(EmotionArray.get_fields_and_field_types())
    face, published = sent['emotions'][0], message.emotions[0]
    assert set(face) == set(EmotionStamped.get_fields_and_field_types())
    assert set(face['roi']) == set(type(published.roi).get_fields_and_field_types())
    assert face['roi'] == {'x_offset': 10, 'y_offset': 20, 'width': 110, 'height': 120, 'do_rectify': False}
    assert sent['header'] == {'stamp': {'sec': 1700000000, 'nanosec': 42}, 'frame_id': 'camera'}
    for field in ('face_id', 'label', 'confidence', 'valence', 'arousal', 'model'):
        assert face[field] == getattr(published, field), field
    assert face['labels'] == ['happy', 'sad'] and face['probabilities'] == list(published.probabilities)
    assert f"{face['confidence']:.2f}" == '0.87'  # not 0.86 from 0.8650 rounded again
    schema_fields = EMOTION_SCHEMA['properties']['emotions']['items']['properties']
    assert set(schema_fields) == set(face) and set(schema_fields['roi']['properties']) == set(face['roi'])


def test_every_panel_reads_a_topic_the_server_or_a_layout_script_publishes():
    layout = json.loads(LAYOUT_FILE.read_text())
    scripts = {script['name']: script['sourceCode'] for script in layout['userScripts'].values()}
    outputs = {re.search(r'export const output = "([^"]+)"', code)[1] for code in scripts.values()}
    assert outputs == {BOXES_TOPIC, PROBABILITIES_TOPIC}
    for code in scripts.values():
        assert re.search(r'export const inputs = \["([^"]+)"\]', code)[1] == EMOTION_TOPIC
    text = LAYOUT_FILE.read_text()
    paths = re.findall(r'"value": "([^"]+)"', text)
    assert paths and all(path.split('.')[0] in {EMOTION_TOPIC} | outputs for path in paths)
    emotion_fields = {path.split('.', 2)[-1] for path in paths if path.startswith(EMOTION_TOPIC + '.')}
    assert emotion_fields and emotion_fields <= set(EmotionStamped.get_fields_and_field_types())
    assert f'"imageTopic": "{IMAGE_TOPIC}"' in text and f'"{BOXES_TOPIC}"' in text
