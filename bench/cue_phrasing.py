"""Which wording of each measured cue is closest to how EMER annotators describe that measurement.

For every measurement perception reports (a loud voice, a fast pace, furrowed brows, ...) this takes the EMER
descriptions in `../shared/data/emer-v1-text.csv` that mention it (a regular expression over the cues the offline
extractor pulls from each description, in the cue's category), and scores each candidate wording as an explanation
states it ("In the audio, the person speaks quickly." -> the extracted cue): per description, the best
all-MiniLM-L6-v2 cosine to that description's cues of the category; then the mean over descriptions and the
share of descriptions matched at >= 0.5 (the one-to-one threshold of EmoCue-360).

Rule: a wording replaces the current one when at least 2 descriptions mention the measurement, its mean is at
least 0.03 higher and its share not lower. Candidates keep the meaning of the measurement and do not reuse a
phrase perception already states for something else (the change-over-time phrases).

    .venv/bin/python bench/cue_phrasing.py [--out bench/results/cue_phrasing.json] [--shared DIR]

It also counts, per MER label, how many descriptions name each of a list of emotional-state words (the readings
of engines/lite/explain.py come from these counts), and how many mention each kind of cue perception reports
(the salience weights of engines/lite/salience.py come from those). Only our own phrases and the numbers land in
the JSON, never description text. Skips when `../shared` is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path[:0] = [str(ROOT)]

MIN_DESCRIPTIONS, MIN_GAIN, MATCH = 2, 0.03, 0.5

# measurement: (category, pattern of EMER cues that describe it, plain wording, other wordings)
MEASURES: dict[str, tuple[str, str, str, list[str]]] = {
    "loud": ("auditory", r"loud|volume (?:is |was )?(?:high|increas|rais)|high volume|raised? (?:his|her) voice",
             "the voice is loud", ["speaks loudly", "the volume is high", "the speaking volume is high"]),
    "soft": ("auditory", r"soft|low volume|quiet|voice (?:is|was) (?:low|weak)|whisper",
             "the voice is soft", ["the voice is quiet", "speaks softly", "the volume is low"]),
    "high_pitch": ("auditory", r"high[- ]pitch|pitch (?:is |was )?high|high tone",
                   "the voice is high-pitched", ["the tone is high", "the voice has a high pitch"]),
    "low_pitch": ("auditory", r"low[- ]pitch|deep|low tone|voice (?:is|was) low",
                  "the voice is low-pitched", ["the voice is deep", "the tone is low", "speaks in a low voice"]),
    "fast": ("auditory", r"quick|fast|speed|accelerat|rapid|pace",
             "speaks quickly", ["the speech is fast", "the speaking speed is fast", "speaks at a fast pace"]),
    "slow": ("auditory", r"slow", "speaks slowly", ["the speech is slow", "the speaking speed is slow"]),
    "pause": ("auditory", r"pause", "long pauses between phrases", ["long pauses in the speech"]),
    "flat": ("auditory", r"flat|monoton|dull|steady tone",
             "the intonation is flat", ["the tone is flat", "the tone is monotonous", "speaks in a flat tone"]),
    "wide_range": ("auditory", r"intonation|rising|upward|downward|ups and downs",
                   "the pitch varies widely", ["the tone rises and falls", "the intonation varies widely",
                                               "the intonation rises and falls"]),
    "pitch_rise": ("auditory", r"tone (?:suddenly )?(?:rais|ris)|rising tone|upward tone|pitch ris",
                   "the pitch rises sharply", ["the tone suddenly rises", "the tone rises sharply"]),
    "level_rise": ("auditory", r"loud|rais\w* (?:his|her) voice|volume (?:increas|rais)",
                   "raises the voice", ["speaks louder", "raises the volume"]),
    "calm": ("auditory", r"calm|steady|gentle", "the tone is calm", ["a calm tone", "the voice is calm"]),
    "calm_soft": ("auditory", r"calm|steady|gentle|soft",
                  "the tone is calm and soft", ["the voice is calm and soft", "the tone is calm and gentle"]),
    "intense": ("auditory", r"intense|excit|passion|agitat|strong|heavy",
                "the tone is intense", ["speaks in an intense tone", "the voice is intense"]),
    "breathy": ("auditory", r"breathy|airy", "the voice is breathy", ["speaks breathily"]),
    "tremble": ("auditory", r"trembl|shak|quiver", "the voice trembles", ["speaks with a trembling voice"]),
    "laughter": ("auditory", r"laugh", "laughter-like bursts", ["laughs briefly", "laughs"]),
    "smile": ("visual", r"smil|grin", "smiles", ["the person is smiling", "has a smile on the face"]),
    "corners_up": ("visual", r"corner", "the corners of the mouth turn up", ["the corners of the mouth are turned up"]),
    "brow_furrow": ("visual", r"frown|furrow|knit|brows? (?:are )?(?:drawn|together)",
                    "brows drawn together", ["the brows are furrowed", "furrows the brows", "frowns slightly"]),
    "brow_raise": ("visual", r"eyebrows? (?:are |is )?rais|raises? (?:his|her) eyebrows",
                   "raises the eyebrows", ["the eyebrows are raised"]),
    "eyes_widen": ("visual", r"wide|widen|stare", "the eyes widen", ["the eyes open wide"]),
    "look_down": ("visual", r"look(?:s|ed|ing)? down|lower\w* (?:his|her) head|head down|bow",
                  "looks down", ["lowers the head"]),
    "head_tilt": ("visual", r"tilt", "tilts the head slightly", ["tilts the head"]),
    "expression": ("visual", r"expression", "the facial expression looks happy",
                   ["the facial expression appears happy", "the facial expression is happy"]),
}
OPENER = {"visual": "In the video, ", "auditory": "In the audio, "}

# State words EMER descriptions use, as the noun a reading would state (engines/lite/explain.py READINGS): counted
# per MER label over the whole descriptions, to pick each label's readings.
STATES: dict[str, str] = {
    "cheerful": "a cheerful mood", "joy": "joy", "satisf": "satisfaction", "gratitude|grateful": "gratitude",
    "delight": "delight", "excite": "excitement", "helpless": "helplessness", "sorrow": "sorrow", "upset": "upset",
    "disappoint": "disappointment", "low mood": "a low mood", "dissatisf": "dissatisfaction", "irritat": "irritation",
    "impatien": "impatience", "resent": "resentment", "frustrat": "frustration", "concern": "concern",
    "unease|uneasy": "unease", "anxi": "anxiety", "nervous": "nervousness", "astonish": "astonishment",
    "amaze": "amazement", "shock": "shock",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cue_phrasing.json")
    ap.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder (default: ../shared)")
    args = ap.parse_args()
    data = args.shared / "data" / "emer-v1-text.csv"
    if not data.is_file():
        print(f"skipped: {data} is absent (the EMER data are not in the repository)")
        return
    import numpy as np

    from engines.lite.explain import clause
    from engines.types import Cue
    from eval.embed import CachedEmbedder, MiniLMEmbedder
    from eval.extract_offline import OfflineExtractor

    emb = CachedEmbedder(MiniLMEmbedder())
    ex = OfflineExtractor(emb)
    with data.open(newline="", encoding="utf-8") as f:
        emer = list(csv.DictReader(f))
    described = [ex.extract(r["reasons"]) for r in emer]

    out: dict[str, dict] = {}
    for name, (cat, pattern, current, candidates) in MEASURES.items():
        rx = re.compile(pattern, re.I)
        docs = [[c for c in d[cat] if "text" not in c] for d in described]
        docs = [d for d in docs if any(rx.search(c) for c in d)]
        rows = []
        for wording in [current, *candidates]:
            stated = ex.extract(OPENER[cat] + clause(Cue(cat, wording)) + ".")[cat]  # type: ignore[arg-type]
            if len(stated) != 1 or not docs:
                rows.append({"wording": wording, "mean": None, "matched": None})
                continue
            v = emb.encode(stated)[0]
            best = [float((emb.encode(d) @ v).max()) for d in docs]
            rows.append({"wording": wording, "mean": round(float(np.mean(best)), 3),
                         "matched": round(float(np.mean([b >= MATCH for b in best])), 2)})
        cur = rows[0]
        choice = current
        if len(docs) >= MIN_DESCRIPTIONS and cur["mean"] is not None:
            ok = [r for r in rows[1:] if r["mean"] is not None and r["mean"] >= cur["mean"] + MIN_GAIN
                  and r["matched"] >= cur["matched"]]
            if ok:
                choice = max(ok, key=lambda r: r["mean"])["wording"]
        out[name] = {"category": cat, "descriptions": len(docs), "wordings": rows, "chosen": choice}
        cells = "  ".join(f"{r['wording']!r} {r['mean']}/{r['matched']}" for r in rows)
        print(f"{name:12} n={len(docs):2}  -> {choice!r:34} {cells}")
    # how many descriptions mention each kind of cue perception reports (engines/lite/salience.py ranks by it)
    from engines.lite.salience import KINDS

    mentions: dict[str, int] = {}
    for name, (cat, _, pattern) in KINDS.items():
        rx = re.compile(pattern, re.I)
        mentions[name] = sum(any(rx.search(c) for c in d[cat] if "text" not in c) for d in described)
    print("mentions:", mentions)
    states: dict[str, dict[str, int]] = {}
    for label in sorted({r["emotions"] for r in emer}):
        texts = [r["reasons"].lower() for r in emer if r["emotions"] == label]
        counts = {noun: sum(bool(re.search(rf"\b(?:{stem})", t)) for t in texts) for stem, noun in STATES.items()}
        states[label] = {"descriptions": len(texts), **dict(sorted(((k, v) for k, v in counts.items() if v),
                                                                  key=lambda kv: -kv[1]))}
        print(f"readings {label:9} ({len(texts)} descriptions): {states[label]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rule": {"min_descriptions": MIN_DESCRIPTIONS, "min_gain": MIN_GAIN,
                                             "match": MATCH}, "measures": out, "mentions": mentions,
                                   "state_words": states},
                                   indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
