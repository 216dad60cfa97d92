"""Explanation quality of the lite profile: grounding of every claim, the label, and EmoCue-360 against a floor.

Runs the lite pipeline over the shared sample (labelled, with a reference description), the real clips in
`../shared/samples/dev/` (unlabelled; transcripts from its manifest where known) and the generated test clips
(tests/media.py), then measures per answer:
- claims: the clauses of the explanation that state something about the person (absence facts and the
  conclusion are not claims; an observation names one clause per cue);
- the fraction of claims inside a segment that cites cue ids of this answer (must be 100 %);
- the fraction of observation claims whose text the cited cue supports (all-MiniLM-L6-v2 cosine >= 0.6), and the
  fraction that any cue of the answer supports (the only measure an answer without citations allows);
- unresolved opposite cue pairs (engines/perception/opposites.py; must be 0);
- phrases of the worked examples (engines/lite/prompt.py) that appear in an answer without being one of its
  cues (must be 0); the grammar's own closed vocabulary (openers, connectives, readings) is not a claim;
- the label distribution; and on `../shared/data/emer-v1-text.csv` the reasoning step alone: cues extracted from
  each description (offline extractor, conclusion sentences and emotion words dropped) plus the subtitle,
  the label chosen from them, accuracy and UAR against the MER labels, both with the configured label scoring
  (per-token log-likelihood) and with contextual calibration added (`emer_v1_text_calibrated`);
- EmoCue-360 (max and one-to-one matching) of the sample's explanation against its reference description, next
  to a constant generic explanation (the floor to beat).

    .venv/bin/python bench/quality.py [--out bench/results/quality.json] [--shared DIR] [--no-emer]

Skips cleanly (exit 0) when `../shared` is absent. Research data never lands in the JSON: transcripts of the
shared clips, given or recognised from their speech, and their quotes are replaced by "[transcript]".
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
# the decoder worker processes ingest spawns must import this checkout too
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

SUPPORT_COSINE = 0.6
# The constant generic explanation (one cue list per category), the floor EmoCue-360 must beat.
GENERIC = {
    "visual": ["the facial expression changes", "the person looks at someone"],
    "auditory": ["the person speaks", "the tone of voice varies"],
    "emotional": ["the person shows some emotion"],
}
EMOTION_WORDS = re.compile(
    r"\b(happ\w*|joy\w*|glad|cheer\w*|pleas\w*|delight\w*|excit\w*|sad\w*|sorrow\w*|grie\w*|upset|depress\w*|"
    r"angr\w*|anger|annoy\w*|furious|irritat\w*|rage|worr\w*|anxi\w*|nervous|fear\w*|afraid|scared|"
    r"surpris\w*|astonish\w*|shock\w*|amaz\w*|emotion\w*|mood|feel\w*|dissatisf\w*|satisf\w*|frustrat\w*|"
    r"disappoint\w*|helpless\w*|unhapp\w*|positive|negative|neutral|calm\w*|relax\w*|tense|tension|distress\w*)\b",
    re.I,
)
_CONCLUDES = re.compile(r"\b(infer\w*|therefore|overall|in summary|in conclusion|emotional state|based on|"
                        r"taken together|conclude\w*)\b", re.I)
_SENT = re.compile(r"(?<=[.!?])\s+")
_CLAUSE = re.compile(r",\s+(?:and\s+|while\s+)?|;\s+|\s+and\s+|\s+while\s+")
_OPENER = re.compile(r"^\s*(?:in the (?:video|audio|text),?\s*|the words\s+)", re.I)
_QUOTED = re.compile(r'"[^"]*"')
# Sentences an answer without segments may hold that are ours, not the model's: the conclusion and absence facts.
_OURS = re.compile(r"\s*(?:these cues suggest|it can be inferred that the person's emotional state|"
                   r"no (?:face|speech|transcript|cues)\b)", re.I)


def norm(s: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", s.lower()))


# -- the clips -----------------------------------------------------------------------------------------------
def clips(tmp: Path) -> list[dict[str, Any]]:
    import media

    out: list[dict[str, Any]] = []
    sample = SHARED / "samples" / "sample_00000007.json"
    if sample.is_file():
        meta = json.loads(sample.read_text())
        out.append({"set": "sample", "id": meta["name"], "video": sample.parent / meta["video"],
                    "transcript": meta.get("subtitle"), "reference": meta.get("reference_description"),
                    "label": meta.get("reference_emotion")})
    manifest = SHARED / "samples" / "dev" / "manifest.jsonl"
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out.append({"set": "dev", "id": row["id"], "video": manifest.parent / row["video"],
                            "transcript": row.get("transcript")})
    img = media.face_image(tmp / "astronaut.png")
    aroused, calm = media.aroused_speech(tmp / "aroused.wav"), media.calm_speech(tmp / "calm.wav")
    gen = {
        "face_aroused": media.face_clip(tmp / "face_aroused.mp4", img, 3.0, audio=aroused),
        "face_calm": media.face_clip(tmp / "face_calm.mp4", img, 3.0, audio=calm),
        "face_mute": media.face_clip(tmp / "face_mute.mp4", img, 3.0),
        "pattern_speech": media.testsrc_clip(tmp / "pattern_speech.mp4", 3.0, audio=aroused),
    }
    transcripts = {"face_aroused": "we actually won, this is amazing!", "face_calm": "I just don't know anymore."}
    out += [{"set": "generated", "id": k, "video": v, "transcript": transcripts.get(k)} for k, v in gen.items()]
    return out


async def analyze(pipe: Any, clip: dict[str, Any]) -> dict[str, Any]:
    from engines.errors import ModelError
    from engines.ingest import ingest
    from engines.types import AnalyzeRequest, DoneEvent, TokenEvent

    for attempt in range(3):  # a decoder process may miss its start-up deadline on a loaded machine
        try:
            c = ingest(Path(clip["video"]), None, pipe.settings.ingest)
            break
        except ModelError:
            if attempt == 2:
                raise
    t = time.perf_counter()
    req = AnalyzeRequest(clip=c, transcript=clip.get("transcript"))
    n_tokens, first = 0, None
    answer = None
    async for ev in pipe.stream(req):
        if isinstance(ev, TokenEvent):
            n_tokens += 1
            first = first if first is not None else time.perf_counter() - t
        elif isinstance(ev, DoneEvent):
            answer = ev.answer
    assert answer is not None
    return {"answer": answer, "token_events": n_tokens, "first_token_s": first, "wall_s": time.perf_counter() - t}


# -- claims --------------------------------------------------------------------------------------------------
def closed_vocabulary() -> list[str]:
    """The grammar's fixed phrases (not claims about the person), normalised; empty where there is no grammar."""
    try:
        from engines.lite import explain
    except ImportError:
        return []
    words = [*explain.OPENERS.values(), *explain.CONNECTIVES, *explain.INTERPRETS.values(),
             *(r for rs in explain.READINGS.values() for r in rs), explain.CONCLUDE]
    return [norm(w) for w in words if norm(w)]


def claims_of(answer: Any) -> list[dict[str, Any]]:
    """[{text, kind, cue_ids}] for each clause that states something about the person."""
    out = []
    segs = getattr(answer, "segments", None) or []
    if segs:
        from engines.lite.explain import clause

        by_id = {c.id: c for c in answer.cues}
        for s in segs:
            if s.kind == "observation":  # one claim per cue it states, in the words it states it
                for i in s.cue_ids:
                    text = clause(by_id[i]) if i in by_id and clause(by_id[i]) in s.text else s.text
                    out.append({"text": _OPENER.sub("", text.strip()).rstrip("."), "kind": s.kind, "cue_ids": [i]})
            elif s.kind == "interpretation":
                out.append({"text": s.text.strip().rstrip("."), "kind": s.kind, "cue_ids": list(s.cue_ids)})
            elif s.kind == "model_text":
                out += [{"text": cl, "kind": s.kind, "cue_ids": []} for sent in _SENT.split(s.text)
                        for cl in _clauses(sent)]
        return out
    for sent in _SENT.split(answer.explanation):
        if not sent.strip() or _OURS.match(sent):
            continue  # the conclusion names the label and absence facts are ours: neither states a cue
        for cl in _clauses(sent):
            out.append({"text": cl, "kind": "free_text", "cue_ids": []})
    return out


def _clauses(sentence: str) -> list[str]:
    s = _OPENER.sub("", sentence.strip()).rstrip(".").strip()
    return [c.strip() for c in _CLAUSE.split(s) if len(c.strip().split()) >= 1 and c.strip()]


def example_phrases() -> list[str]:
    """Every phrase the worked examples state about a person (cue lines and explanation clauses), normalised."""
    from engines.lite import prompt

    texts: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, str):
            texts.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)
        elif hasattr(x, "__dataclass_fields__"):
            for f in x.__dataclass_fields__:
                if f != "label":
                    walk(getattr(x, f))

    walk(prompt.EXAMPLES)
    closed = closed_vocabulary()
    phrases = set()
    for t in texts:
        t = _QUOTED.sub("", t)
        for sent in re.split(r"[.;:]\s*", t):
            for cl in _clauses(sent):
                n = norm(re.sub(r"^(?:says|the person|the face shows|the audio has|the text has)\s+", "", cl))
                for c in closed:
                    n = n.replace(c, " ").strip()
                n = " ".join(n.split())
                if len(n.split()) >= 2:
                    phrases.add(n)
    return sorted(phrases)


def copied_phrases(answer: Any, phrases: list[str]) -> list[str]:
    said = norm(_QUOTED.sub(" ", answer.explanation))
    cues = [norm(c.text) for c in answer.cues]
    return [p for p in phrases if re.search(rf"\b{re.escape(p)}\b", said) and not any(p in c for c in cues)]


def measure(answer: Any, emb: Any, phrases: list[str]) -> dict[str, Any]:
    from engines.perception.opposites import unresolved_opposites

    cl = claims_of(answer)
    ids = {c.id: c for c in answer.cues if getattr(c, "id", "")}
    cited = [c for c in cl if c["cue_ids"] and all(i in ids for i in c["cue_ids"])]
    obs = [c for c in cl if c["kind"] in ("observation", "free_text", "model_text")]
    texts = [c["text"] for c in obs] + [c.text for c in answer.cues]
    vec = dict(zip(texts, emb.encode(texts), strict=True)) if texts else {}
    by_cited = by_any = 0
    for c in obs:
        v = vec[c["text"]]
        if c["cue_ids"] and max(float(v @ vec[ids[i].text]) for i in c["cue_ids"] if i in ids) >= SUPPORT_COSINE:
            by_cited += 1
        if answer.cues and max(float(v @ vec[k.text]) for k in answer.cues) >= SUPPORT_COSINE:
            by_any += 1
    return {
        "claims": len(cl),
        "claims_citing": len(cited),
        "observation_claims": len(obs),
        "supported_by_cited": by_cited,
        "supported_by_any_cue": by_any,
        "interpretations": sum(c["kind"] == "interpretation" for c in cl),
        "unresolved_opposites": [[a.text, b.text] for a, b in unresolved_opposites(answer.cues)],
        "copied_example_phrases": copied_phrases(answer, phrases),
    }


# -- the label on text alone --------------------------------------------------------------------------------
def emer_rows() -> list[dict[str, str]]:
    path = SHARED / "data" / "emer-v1-text.csv"
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def reasons_without_conclusion(text: str) -> str:
    keep = [s for s in _SENT.split(text or "") if s.strip() and not _CONCLUDES.search(s)]
    return " ".join(keep)


async def emer_labels(pipe: Any, extractor: Any) -> dict[str, Any]:
    from engines.perception.verbal import verbal_cues
    from engines.types import Cue, assign_cue_ids
    from eval.labels import label_metrics, normalise_label

    labels = list(pipe.lite.labels)
    pairs, preds = [], []
    for row in emer_rows():
        ext = extractor.extract(reasons_without_conclusion(row["reasons"]))
        cues: list[Cue] = []
        for cat, modality in (("visual", "visual"), ("auditory", "auditory")):
            kept = [c for c in ext.get(cat, []) if not c.startswith("Subtitle text") and not EMOTION_WORDS.search(c)]
            cues += [Cue(modality, c.rstrip(". ").lower(), strength=round(1.0 - 0.05 * i, 3))
                     for i, c in enumerate(kept)]
        cues += verbal_cues(row.get("subtitles") or None).cues
        assign_cue_ids(cues)
        label, _ = await pipe.choose_label(cues, labels)
        ref = normalise_label(row["emotions"])
        pairs.append((ref, label))
        preds.append(label)
    m = label_metrics(pairs, labels)
    return {"accuracy": m["accuracy"], "uar": m["uar"], "n": m["n"], "per_class_recall": m["per_class_recall"],
            "predicted": dict(Counter(preds).most_common()), "confusion": m["confusion"]}


# -- EmoCue-360 ---------------------------------------------------------------------------------------------
def emocue(explanation: str, reference: str, extractor: Any, emb: Any) -> dict[str, Any]:
    from eval.emocue360 import score

    ref = {"s": extractor.extract(reference)}
    out: dict[str, Any] = {}
    for name, pred in (("answer", {"s": extractor.extract(explanation)}), ("generic_floor", {"s": GENERIC})):
        out[name] = {m: {cat: (r or {}).get("f1") for cat, r in score(pred, ref, emb, m).per_sample["s"].items()}
                     for m in ("max", "one-to-one")}
    return out


# -- the run --------------------------------------------------------------------------------------------------
def said(answer: Any) -> list[str]:
    """What was said, as an answer's strings hold it: the transcript (given or recognised), its translation, and the
    quotes of the verbal cues (cut to the quote length). Segments and words are blanked in `answer_json` instead,
    since a single word is no string to replace everywhere."""
    out: list[str] = []
    tr = getattr(answer, "transcript", None)
    if tr is not None:
        out += [tr.text, tr.english or ""]
    for c in answer.cues:
        if c.modality == "verbal" and c.text.startswith('says: "'):
            out.append(c.text[len('says: "'):].removesuffix('"'))
    return [t.strip() for t in out if t and t.strip()]


def redact(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, str):
        for s in sorted(set(secrets), key=len, reverse=True):  # a whole quote before any word of it
            obj = obj.replace(s, "[transcript]")
        return obj
    if isinstance(obj, dict):
        return {k: redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v, secrets) for v in obj]
    return obj


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:.0f} %" if b else "-"


def main() -> None:
    global SHARED
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    ap.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder (default: ../shared)")
    ap.add_argument("--no-emer", action="store_true", help="skip the label measurement on emer-v1-text.csv")
    ap.add_argument("--note", default="latencies are of one process on a 2-core CPU box, for reference only",
                    help="what else shared the machine, for the JSON")
    args = ap.parse_args()
    SHARED = args.shared
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent (the shared clips and data are not in the repository)")
        return

    from engines.lite.pipeline import LitePipeline
    from eval.embed import CachedEmbedder, MiniLMEmbedder
    from eval.extract_offline import OfflineExtractor
    from xemo.settings import Settings

    settings = Settings()
    pipe = LitePipeline(settings)
    t = time.perf_counter()
    pipe.load()  # no warm-up: quality, not latency, is measured here
    load_s = time.perf_counter() - t
    emb = CachedEmbedder(MiniLMEmbedder())
    extractor = OfflineExtractor(emb)
    phrases = example_phrases()

    rows: list[dict[str, Any]] = []
    secrets: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips(Path(tmp)):
            if clip["set"] != "generated" and clip.get("transcript"):
                secrets.append(clip["transcript"])
            r = asyncio.run(analyze(pipe, clip))
            a = r["answer"]
            if clip["set"] != "generated":  # what the shared clips' own speech was recognised as, too
                secrets += said(a)
            row = {"set": clip["set"], "id": clip["id"], "label": a.emotion["label"],
                   "reference_label": clip.get("label"), **measure(a, emb, phrases),
                   "token_events": r["token_events"], "first_token_s": r["first_token_s"], "wall_s": r["wall_s"],
                   "explanation": a.explanation}
            if clip.get("reference"):
                row["emocue360"] = emocue(a.explanation, clip["reference"], extractor, emb)
                row["answer_json"] = a.to_dict()
                for seg in (row["answer_json"].get("transcript") or {}).get("segments") or []:
                    seg["text"] = "[transcript]"
                    for w in seg.get("words") or []:
                        w["word"] = "[transcript]"
            rows.append(row)
            print(f"{clip['set']:9} {clip['id']:20} {a.emotion['label']:8} claims {row['claims']:2}  "
                  f"cited {row['claims_citing']:2}  wall {r['wall_s']:.1f}s", flush=True)
        emer = emer_cal = None
        if not args.no_emer and (SHARED / "data" / "emer-v1-text.csv").is_file():
            emer = asyncio.run(emer_labels(pipe, extractor))
            configured = pipe.lite
            pipe.lite = configured.model_copy(update={"label_calibration": not configured.label_calibration})
            other = asyncio.run(emer_labels(pipe, extractor))
            pipe.lite = configured
            emer, emer_cal = (other, emer) if configured.label_calibration else (emer, other)
    pipe.close()

    def total(key: str, sel: list[dict[str, Any]]) -> int:
        return sum(r[key] if isinstance(r[key], int) else len(r[key]) for r in sel)

    sets = {s: [r for r in rows if r["set"] == s] for s in ("sample", "dev", "generated")}
    sets["all"] = rows
    summary = {}
    print(f"\n{'set':9} {'answers':>7} {'claims/ans':>10} {'citing':>7} {'cited supp.':>11} {'any-cue supp.':>13} "
          f"{'opposites':>9} {'copied':>6}")
    for name, sel in sets.items():
        if not sel:
            continue
        c, obs = total("claims", sel), total("observation_claims", sel)
        s = {"answers": len(sel), "claims_per_answer": round(c / len(sel), 2),
             "claims_citing": pct(total("claims_citing", sel), c),
             "observations_supported_by_cited_cue": pct(total("supported_by_cited", sel), obs),
             "observations_supported_by_any_cue": pct(total("supported_by_any_cue", sel), obs),
             "unresolved_opposite_pairs": total("unresolved_opposites", sel),
             "copied_example_phrases": total("copied_example_phrases", sel),
             "labels": dict(Counter(r["label"] for r in sel).most_common())}
        summary[name] = s
        print(f"{name:9} {s['answers']:7} {s['claims_per_answer']:10} {s['claims_citing']:>7} "
              f"{s['observations_supported_by_cited_cue']:>11} {s['observations_supported_by_any_cue']:>13} "
              f"{s['unresolved_opposite_pairs']:9} {s['copied_example_phrases']:6}")
    print("labels:", summary["all"]["labels"])
    for name, e in (("per-token", emer), ("per-token + calibrated", emer_cal)):
        if e:
            print(f"emer-v1-text (label from cues + subtitle, {name}): accuracy {e['accuracy']:.3f}  "
                  f"UAR {e['uar']:.3f}  predicted {e['predicted']}")
    for r in rows:
        if "emocue360" in r:
            for m in ("max", "one-to-one"):
                a, g = r["emocue360"]["answer"][m], r["emocue360"]["generic_floor"][m]
                cells = "  ".join(f"{cat} {_f(a.get(cat))} vs {_f(g.get(cat))}" for cat in ("visual", "auditory",
                                                                                            "emotional"))
                print(f"EmoCue-360 F1 {r['id']} ({m}): answer vs generic floor: {cells}")

    result = {
        "summary": summary, "emer_v1_text": emer, "emer_v1_text_calibrated": emer_cal,
        "label_calibration_configured": settings.lite.label_calibration, "answers": rows, "load_s": round(load_s, 2),
        "model": pipe.model, "machine": platform.platform(), "cpus": os.cpu_count(),
        "note": args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(redact(result, secrets), indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
