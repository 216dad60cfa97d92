"""Which perceived cues an explanation should lead with: the ones human annotators mention.

A cue's strength says how clearly its measure passed its threshold, but strengths of different measures are not
comparable (a pitch 7 semitones above typical saturates at 1.0, a loud voice 3 dB over its threshold scores
0.6), and annotators do not mention every measurable thing equally: of the 98 EMER descriptions in the reasoning
set, 23 mention the speaking speed, 10 a loud voice and none a high pitch. So the lite profile ranks the cues of
a modality by strength times a weight that grows with how many descriptions mention that kind of cue
(`MENTIONS`, counted by bench/cue_phrasing.py over the cues its offline extractor finds, and checked against its
JSON by the tests). The ranking orders the prompt's cue lists and picks the cues offered to the explanation,
which states all of them in the order the model chooses.
"""

from __future__ import annotations

import math
import re

from engines.types import Cue, Modality

# kind: (modality, pattern over this repository's cue phrases, pattern over EMER cue clauses)
KINDS: dict[str, tuple[Modality, str, str]] = {
    "smile": ("visual", r"\bsmil", r"smil|grin"),
    "corners_up": ("visual", r"corners of the mouth turn up|from down to up", r"corner[^.;]*\bup|upturn|upward"),
    "corners_down": ("visual", r"corners of the mouth (?:turn|pull) down",
                     r"corner[^.;]*\bdown|droop"),
    "brow_furrow": ("visual", r"brows are[\w ]*furrowed|frown",
                    r"frown|furrow|knit|brows? (?:are )?(?:drawn|together)"),
    "brow_raise": ("visual", r"raises the eyebrows|eyebrows raised",
                   r"eyebrows? (?:are |is )?rais|raises? (?:his|her) eyebrows"),
    "inner_brow": ("visual", r"inner brows lower", r"inner (?:brow|eyebrow)|brows? (?:lower|droop)"),
    "eyes_widen": ("visual", r"eyes (?:widen|open)", r"wide|widen|stare"),
    "squint": ("visual", r"squint", r"squint|narrow"),
    "blink": ("visual", r"blink", r"blink"),
    "look_down": ("visual", r"looks (?:far )?down|lowers the head",
                  r"look(?:s|ed|ing)? down|lower\w* (?:his|her) head|head down|bow"),
    "head_tilt": ("visual", r"tilts the head", r"tilt"),
    "nod": ("visual", r"\bnods", r"\bnod"),
    "head_shake": ("visual", r"shakes the head", r"shak\w* (?:his|her|the) head|head shak"),
    "turn_aside": ("visual", r"turns the head", r"turn\w* (?:his|her|the) head|look\w* away|avert"),
    "mouth_open": ("visual", r"jaw drops|mouth (?:opens|falls)", r"mouth (?:is |was )?(?:open|wide)|jaw|gap"),
    "lips_pressed": ("visual", r"lips pressed",
                     r"press\w* (?:his|her|the) lips|lips (?:are |were )?(?:press|tight)|purs"),
    "lip_stretch": ("visual", r"lips stretch", r"lips? stretch|stretch\w* (?:his|her|the) lips"),
    "expression": ("visual", r"facial expression looks", r"expression"),
    "loud": ("auditory", r"voice is loud|speaks loudly",
             r"loud|volume (?:is |was )?(?:high|increas|rais)|high volume|raised? (?:his|her) voice"),
    "soft": ("auditory", r"voice is (?:quiet|soft)|whisper",
             r"soft|low volume|quiet|voice (?:is|was) (?:low|weak)|whisper"),
    "high_pitch": ("auditory", r"high-pitched", r"high[- ]pitch|pitch (?:is |was )?high|high tone"),
    "low_pitch": ("auditory", r"low-pitched", r"low[- ]pitch|deep|low tone|voice (?:is|was) low"),
    "fast": ("auditory", r"speaks quickly", r"quick|fast|speed|accelerat|rapid|pace"),
    "slow": ("auditory", r"speaks slowly", r"slow"),
    "pause": ("auditory", r"pause", r"pause"),
    "flat": ("auditory", r"monotonous|intonation is flat", r"flat|monoton|dull"),
    "wide_range": ("auditory", r"rises and falls", r"intonation|rising|upward|downward|ups and downs"),
    "pitch_rise": ("auditory", r"suddenly rises", r"tone (?:suddenly )?(?:rais|ris)|rising tone|upward tone|pitch ris"),
    "level_rise": ("auditory", r"speaks louder", r"louder|rais\w* (?:his|her) voice|volume (?:increas|rais)"),
    "calm": ("auditory", r"tone is (?:calm|steady)", r"calm|steady|gentle"),
    "intense": ("auditory", r"intense", r"intense|excit|passion|agitat|strong|heavy"),
    "tense": ("auditory", r"sounds tense", r"tense|tension|tight"),
    "hoarse": ("auditory", r"hoarse", r"hoarse|rough|rasp"),
    "breathy": ("auditory", r"breathy", r"breathy|airy"),
    "tremble": ("auditory", r"trembl", r"trembl|shak|quiver"),
    "laughter": ("auditory", r"laugh", r"laugh"),
}
_OURS = [(k, m, re.compile(p, re.I)) for k, (m, p, _) in KINDS.items()]

# Descriptions of the 98 (emer-v1-text.csv) whose extracted cues of the kind's modality match its EMER pattern;
# written by bench/cue_phrasing.py ("mentions" in its JSON).
MENTIONS: dict[str, int] = {
    "smile": 16, "corners_up": 16, "corners_down": 0, "brow_furrow": 21, "brow_raise": 8, "inner_brow": 0,
    "eyes_widen": 7, "squint": 0, "blink": 0, "look_down": 7, "head_tilt": 2, "nod": 0, "head_shake": 1,
    "turn_aside": 2, "mouth_open": 1, "lips_pressed": 1, "lip_stretch": 0, "expression": 7, "loud": 10, "soft": 5,
    "high_pitch": 0, "low_pitch": 5, "fast": 23, "slow": 8, "pause": 2, "flat": 1, "wide_range": 4, "pitch_rise": 3,
    "level_rise": 4, "calm": 4, "intense": 14, "tense": 3, "hoarse": 2, "breathy": 0, "tremble": 1, "laughter": 7,
}


def kind(cue: Cue) -> str | None:
    """The kind of a visual or auditory cue, by its phrase (the first matching kind of its modality)."""
    return next((k for k, m, rx in _OURS if m == cue.modality and rx.search(cue.text)), None)


def weight(cue: Cue) -> float:
    """The ranking weight: strength times log(2 + mentions); a verbal cue keeps its strength."""
    if cue.modality == "verbal":
        return cue.strength
    k = kind(cue)
    return cue.strength * math.log(2 + (MENTIONS.get(k, 0) if k else 0))


def ranked(cues: list[Cue]) -> list[Cue]:
    """The cues in the order an explanation should consider them, most salient first (stable for ties)."""
    return sorted(cues, key=lambda c: -weight(c))
