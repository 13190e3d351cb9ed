"""Expression label names shared by the models, the data loaders and the messages.

Names are the lowercase strings of hri_msgs/Expression (REP-155), so a bridge
to ROS4HRI is a rename. ``contemptuous`` (CK+) has no REP-155 counterpart.
"""

NEUTRAL = 'neutral'
ANGRY = 'angry'
SAD = 'sad'
HAPPY = 'happy'
SURPRISED = 'surprised'
DISGUSTED = 'disgusted'
SCARED = 'scared'
CONTEMPTUOUS = 'contemptuous'

# FER-2013 class order of the original CSV (0 angry ... 6 neutral).
FER2013_LABELS = (ANGRY, DISGUSTED, SCARED, HAPPY, SAD, SURPRISED, NEUTRAL)

# CK+ 7-class order (alphabetical folder names of the common 48x48 release).
CKPLUS_LABELS = (ANGRY, CONTEMPTUOUS, DISGUSTED, SCARED, HAPPY, SAD, SURPRISED)

# Dataset folder names and other common spellings -> label.
ALIASES = {
    'anger': ANGRY, 'angry': ANGRY,
    'contempt': CONTEMPTUOUS, 'contemptuous': CONTEMPTUOUS,
    'disgust': DISGUSTED, 'disgusted': DISGUSTED,
    'fear': SCARED, 'fearful': SCARED, 'scared': SCARED,
    'happy': HAPPY, 'happiness': HAPPY, 'joy': HAPPY,
    'neutral': NEUTRAL,
    'sad': SAD, 'sadness': SAD,
    'surprise': SURPRISED, 'surprised': SURPRISED,
}


def canonical_label(name: str) -> str:
    """Map a dataset folder name or common spelling to the message label."""
    key = name.strip().lower()
    if key not in ALIASES:
        raise ValueError(f'unknown expression label {name!r}; known: {sorted(ALIASES)}')
    return ALIASES[key]
