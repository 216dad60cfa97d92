"""Turn the measured prosody and voice quality into EMER-style auditory cues with span, strength and evidence.

Each measure is worded the way EMER descriptions word it, where the EMER-V1 descriptions that mention it favour
another wording clearly (bench/cue_phrasing.py: "the tone is monotonous", not "the intonation is flat").
Thresholds are in one place (`Norms`). Absolute levels are judged against typical adult norms (pitch against
the male or female speaking range the median F0 falls in; loudness in dBFS of the speech parts, which assumes a
normally gained recording); local events against the speaker's own baseline in the same clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.perception.audio.prosody import Tracks, runs, semitones
from engines.perception.audio.voice_quality import tremor
from engines.types import Cue


@dataclass(frozen=True)
class Norms:
    male_f0_hz: float = 112.0  # typical adult speaking F0 (means of the usual 85-155 / 165-255 Hz ranges)
    female_f0_hz: float = 210.0
    ambiguous_f0_hz: tuple[float, float] = (145.0, 175.0)  # male or female: no absolute pitch-level cue
    pitch_high_st: float = 2.5  # semitones above/below the typical mean
    pitch_low_st: float = -3.0
    loud_db: float = -20.0  # equivalent level of the speech parts, dBFS
    soft_db: float = -26.0
    fast_syl_s: float = 5.5  # syllable nuclei per second of speech (conversational English is ~4-5)
    slow_syl_s: float = 3.8
    flat_range_st: float = 2.5  # F0 p10-p90
    wide_range_st: float = 9.0
    long_pause_s: float = 0.8
    local_pitch_st: float = 4.0  # a stretch this far above the speaker's own median
    local_level_db: float = 6.0
    tremor_depth_st: float = 1.0
    tremor_periodicity: float = 0.55
    whisper_voiced: float = 0.15  # voiced share of speech below which the speech is whispered or hoarse
    whisper_alpha_db: float = 0.0  # espeak's whisper: +12 dB; its croak and growl voices: -5 and -2 dB
    breathy_hnr_db: float = 3.0
    tense_alpha_db: float = -4.0
    tense_hammarberg_db: float = 12.0


NORMS = Norms()


def _ramp(v: float, start: float, full: float) -> float:
    """0.3 at the threshold rising to 1.0 at `full` (either direction)."""
    x = (v - start) / (full - start) if full != start else 1.0
    return round(0.3 + 0.7 * float(np.clip(x, 0.0, 1.0)), 3)


def _r(v: float) -> float:
    return round(float(v), 3)


def vocal_cues(feats: dict[str, float], tr: Tracks, segments: list[tuple[float, float]], n: Norms = NORMS) -> list[Cue]:
    if not segments:
        return []
    span = (segments[0][0], segments[-1][1])
    cues: list[Cue] = []

    def add(text: str, strength: float, evidence: dict[str, object], s: float = span[0], e: float = span[1]):
        cues.append(Cue("auditory", text, round(s, 2), round(e, 2), strength, evidence))

    lvl = feats.get("loudness_db")
    if lvl is not None:
        ev = {"loudness_dbfs": _r(lvl), "loud_above_dbfs": n.loud_db, "soft_below_dbfs": n.soft_db}
        if lvl >= n.loud_db:
            add("the voice is loud", _ramp(lvl, n.loud_db, n.loud_db + 8), ev)
        elif lvl <= n.soft_db:
            add("the voice is quiet", _ramp(lvl, n.soft_db, n.soft_db - 8), ev)

    f0 = feats.get("f0_median_hz")
    if f0 is not None and not (n.ambiguous_f0_hz[0] <= f0 <= n.ambiguous_f0_hz[1]):
        male = f0 < n.ambiguous_f0_hz[0]
        ref = n.male_f0_hz if male else n.female_f0_hz
        rel = float(semitones(np.array(f0), ref))
        ev = {
            "f0_median_hz": _r(f0),
            "typical_hz": ref,
            "range": "male" if male else "female",
            "semitones_vs_typical": _r(rel),
        }
        if rel >= n.pitch_high_st:
            add("the voice is high-pitched", _ramp(rel, n.pitch_high_st, n.pitch_high_st + 5), ev)
        elif rel <= n.pitch_low_st:
            add("the voice is low-pitched", _ramp(rel, n.pitch_low_st, n.pitch_low_st - 5), ev)

    rng = feats.get("f0_range_st")
    if rng is not None and feats.get("speech_s", 0) >= 1.5:
        ev = {"f0_range_st_p10_p90": _r(rng)}
        if rng <= n.flat_range_st:
            add("the tone is monotonous", _ramp(rng, n.flat_range_st, n.flat_range_st - 1.5), ev)
        elif rng >= n.wide_range_st:
            add("the tone rises and falls", _ramp(rng, n.wide_range_st, n.wide_range_st + 6), ev)

    rate = feats.get("syllable_rate", 0.0)
    if feats.get("speech_s", 0) >= 1.0 and feats.get("syllables", 0) >= 3:
        ev = {"syllables_per_s": _r(rate), "fast_above": n.fast_syl_s, "slow_below": n.slow_syl_s}
        if rate >= n.fast_syl_s:
            add("speaks quickly", _ramp(rate, n.fast_syl_s, n.fast_syl_s + 2), ev)
        elif rate <= n.slow_syl_s:
            add("speaks slowly", _ramp(rate, n.slow_syl_s, n.slow_syl_s - 1.5), ev)

    gaps = [(a[1], b[0]) for a, b in zip(segments, segments[1:], strict=False) if b[0] - a[1] >= n.long_pause_s]
    if gaps:
        s, e = max(gaps, key=lambda g: g[1] - g[0])
        text = "long pauses between phrases" if len(gaps) > 1 else "a long pause"
        add(
            text,
            _ramp(e - s, n.long_pause_s, 2.5),
            {"pauses_over_s": n.long_pause_s, "count": len(gaps), "longest_s": _r(e - s)},
            s,
            e,
        )

    cues += _local_cues(feats, tr, n)
    cues += _quality_cues(feats, tr, n, span)

    # An overall tone only when the level cues agree clearly (a barely loud, high voice alone is not intense).
    strength = {c.text: c.strength for c in cues}
    loud = strength.get("the voice is loud", 0.0)
    high = max(strength.get("the voice is high-pitched", 0.0), strength.get("the tone suddenly rises", 0.0))
    fast = strength.get("speaks quickly", 0.0)
    levels = {k: _r(feats[k]) for k in ("loudness_db", "f0_median_hz", "syllable_rate", "f0_range_st") if k in feats}
    if not cues:  # every measure inside the usual range
        add("the tone is steady", 0.3, levels)
    elif "the voice is quiet" in strength and not (high or fast or loud):
        add("the tone is calm and soft", 0.5, levels)
    elif "speaks slowly" in strength:  # an unhurried pace outweighs a loud or high voice
        add("the tone is calm", round(0.3 + 0.4 * strength["speaks slowly"], 3), levels)
    elif sum(v >= 0.3 for v in (loud, high, fast)) >= 2 and (loud >= 0.5 or fast >= 0.3):
        ev = {**levels, "loud_strength": loud, "high_strength": high, "fast_strength": fast}
        add("speaks in an intense tone", round(float(np.mean([loud, high, fast])), 3), ev)
    return cues


def _windows(tr: Tracks, size: int = 50, hop: int = 25) -> list[tuple[int, int]]:
    """1 s windows (0.5 s hop) inside the speech frames."""
    out = []
    for a, b in runs(tr.speech):
        for s in range(a, max(a + 1, b - size + 1), hop):
            out.append((s, min(b, s + size)))
    return out


def _local_cues(feats: dict[str, float], tr: Tracks, n: Norms) -> list[Cue]:
    """Stretches where pitch or level stands out from the speaker's own clip-wide baseline."""
    cues: list[Cue] = []
    if feats.get("speech_s", 0) < 2.0:  # too little speech for a baseline
        return cues
    voiced_f0 = tr.f0[tr.voiced]
    f0_med = float(np.median(voiced_f0)) if voiced_f0.size >= 10 else None  # the track's own, not a backend's
    lv = tr.level_db[tr.speech]
    base_lv = float(np.median(lv))
    best_p, best_l = (0.0, None), (0.0, None)
    for a, b in _windows(tr):
        f = tr.f0[a:b][tr.voiced[a:b]]
        if f0_med and f.size >= 10:
            d = float(semitones(np.array(np.median(f)), f0_med))
            if d > best_p[0]:
                best_p = (d, (a, b))
        seg = tr.level_db[a:b][tr.speech[a:b]]
        if seg.size >= 25:
            d = float(np.percentile(seg, 75) - np.percentile(lv, 75))
            if d > best_l[0]:
                best_l = (d, (a, b))
    if best_p[1] and best_p[0] >= n.local_pitch_st:
        a, b = best_p[1]
        cues.append(
            Cue(
                "auditory",
                "the tone suddenly rises",
                round(a * tr.hop_s, 2),
                round(b * tr.hop_s, 2),
                _ramp(best_p[0], n.local_pitch_st, n.local_pitch_st + 6),
                {"semitones_above_own_median": _r(best_p[0]), "own_median_hz": _r(f0_med or 0)},
            )
        )
    if best_l[1] and best_l[0] >= n.local_level_db:
        a, b = best_l[1]
        cues.append(
            Cue(
                "auditory",
                "speaks louder",
                round(a * tr.hop_s, 2),
                round(b * tr.hop_s, 2),
                _ramp(best_l[0], n.local_level_db, n.local_level_db + 8),
                {"db_above_own_level": _r(best_l[0]), "own_median_dbfs": _r(base_lv)},
            )
        )
    return cues


def _periodicity(r: np.ndarray) -> float:
    """Highest autocorrelation at 4-10 Hz lags (20 ms frames) of a zero-mean F0 residual."""
    r = r - r.mean()
    ac = np.correlate(r, r, "full")[len(r) - 1 :]
    return float(ac[5:13].max() / ac[0]) if ac[0] > 0 and len(ac) > 13 else 0.0


def _quality_cues(feats: dict[str, float], tr: Tracks, n: Norms, span: tuple[float, float]) -> list[Cue]:
    cues: list[Cue] = []
    s, e = (round(v, 2) for v in span)
    if feats.get("speech_s", 0) >= 0.5 and feats.get("voiced_ratio", 1.0) < n.whisper_voiced:
        # Speech with hardly any pitch: whispered (noise above 1 kHz) or hoarse/creaky (energy stays low).
        alpha = feats.get("alpha_ratio_speech_db", 0.0)
        text = "speaks in a whisper" if alpha >= n.whisper_alpha_db else "the voice is hoarse"
        ev = {"voiced_share_of_speech": _r(feats["voiced_ratio"]), "alpha_ratio_speech_db": _r(alpha)}
        cues.append(
            Cue("auditory", text, s, e, _ramp(n.whisper_voiced - feats["voiced_ratio"], 0.0, n.whisper_voiced), ev)
        )
        return cues
    hnr = feats.get("hnr_db")
    if hnr is not None and hnr <= n.breathy_hnr_db:
        cues.append(
            Cue(
                "auditory",
                "the voice is breathy",
                s,
                e,
                _ramp(hnr, n.breathy_hnr_db, 0.0),
                {"hnr_db": _r(hnr), "breathy_below_db": n.breathy_hnr_db},
            )
        )
    alpha, ham, lvl = feats.get("alpha_ratio_db"), feats.get("hammarberg_db"), feats.get("loudness_db")
    if (
        alpha is not None
        and ham is not None
        and lvl is not None
        and alpha >= n.tense_alpha_db
        and ham <= n.tense_hammarberg_db
        and lvl >= n.soft_db
    ):
        cues.append(
            Cue(
                "auditory",
                "the voice sounds tense",
                s,
                e,
                _ramp(alpha, n.tense_alpha_db, 2.0),
                {"alpha_ratio_db": _r(alpha), "hammarberg_db": _r(ham)},
            )
        )
    _, per_run = tremor(tr)
    shaky = []
    for a, b, depth in per_run:
        if depth >= n.tremor_depth_st:
            per = _periodicity(
                semitones(tr.f0[a:b])
                - np.convolve(np.pad(semitones(tr.f0[a:b]), 5, mode="edge"), np.ones(11) / 11, mode="same")[5:-5]
            )
            if per >= n.tremor_periodicity:
                shaky.append((a, b, depth, per))
    if shaky:
        a, b = shaky[0][0], shaky[-1][1]
        depth = max(d for _, _, d, _ in shaky)
        cues.append(
            Cue(
                "auditory",
                "the voice trembles",
                round(a * tr.hop_s, 2),
                round(b * tr.hop_s, 2),
                _ramp(depth, n.tremor_depth_st, 3.0),
                {"f0_modulation_st": _r(depth), "periodicity_4_10hz": _r(max(p for *_, p in shaky))},
            )
        )
    return cues
