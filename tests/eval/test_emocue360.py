"""EmoCue-360 scoring: hand-computed examples with fixed embeddings, the released edge rules, one-to-one
matching, and sanity checks with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eval_helpers import TableEmbedder

from eval.embed import CachedEmbedder
from eval.emocue360 import CueFormatError, match_scores, score

R2 = 1 / math.sqrt(2)
# a, b, c orthogonal; ab is halfway between a and b (cosine 1/sqrt2 with each).
TABLE = {
    "smile": (1, 0, 0),
    "smiling": (1, 0, 0),
    "frown": (0, 1, 0),
    "loud voice": (0, 0, 1),
    "soft voice": (0, 0, 1),
    "smile-frown": (1, 1, 0),
    "happy": (1, 0, 0),
    "sad": (0, 1, 0),
    "Subtitle text: 'hi'": (1, 1, 1),
    "the text says hi": (1, 1, 1),
    "calm tone": (0, 1, 1),
}


def emb() -> TableEmbedder:
    return TableEmbedder(TABLE)


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r)


def test_max_matching_by_hand() -> None:
    ref = {"s1": {"visual": ["smile", "frown"], "auditory": ["loud voice"], "emotional": ["happy"]}}
    pred = {"s1": {"visual": ["smiling", "smile-frown"], "auditory": ["soft voice"], "emotional": ["sad"]}}
    rep = score(pred, ref, emb())
    # S (ref rows x pred cols) = [[1, r2], [0, r2]]: recall (1 + r2)/2, precision (1 + r2)/2.
    v = rep.categories["visual"]
    assert v.recall == pytest.approx((1 + R2) / 2, abs=1e-6)
    assert v.precision == pytest.approx((1 + R2) / 2, abs=1e-6)
    assert v.f1 == pytest.approx((1 + R2) / 2, abs=1e-6)
    assert rep.categories["auditory"].f1 == pytest.approx(1.0, abs=1e-6)
    e = rep.categories["emotional"]
    assert (e.recall, e.precision, e.f1) == (pytest.approx(0.0, abs=1e-6),) * 3  # orthogonal: P+R=0 -> F1 0


def test_means_over_samples_are_of_per_sample_f1() -> None:
    ref = {"s1": {"visual": ["smile"]}, "s2": {"visual": ["smile", "frown"]}}
    pred = {"s1": {"visual": ["smile"]}, "s2": {"visual": ["smile"]}}
    v = score(pred, ref, emb()).categories["visual"]
    # s1: P=R=F1=1. s2: recall (1+0)/2 = .5, precision 1, F1 2/3.
    assert v.n == 2
    assert v.recall == pytest.approx((1 + 0.5) / 2)
    assert v.precision == pytest.approx(1.0)
    assert v.f1 == pytest.approx((1 + 2 / 3) / 2)  # mean of F1s, not F1 of the means (0.857)


def test_released_edge_rules() -> None:
    ref = {
        "empty_ref": {"visual": [], "auditory": ["loud voice"], "emotional": ["happy"]},
        "empty_pred": {"visual": ["smile"], "auditory": ["loud voice"], "emotional": ["happy"]},
        "subtitle": {"visual": ["smile"], "auditory": ["Subtitle text: 'hi'"], "emotional": ["happy"]},
        "no_emotional_key": {"visual": ["smile"], "auditory": ["loud voice"], "emotional": []},
        "never_predicted": {"visual": ["smile"], "auditory": ["loud voice"], "emotional": ["happy"]},
    }
    pred = {
        "empty_ref": {"visual": ["smile"], "auditory": ["loud voice"], "emotional": ["happy"]},
        "empty_pred": {"visual": [], "auditory": ["the text says hi"], "emotional": ["happy"]},
        "subtitle": {"visual": ["smile"], "auditory": ["Subtitle text: 'hi'", "loud voice"], "emotional": ["happy"]},
        "no_emotional_key": {"visual": ["smile"], "auditory": ["loud voice"]},
        "not_in_reference": {"visual": ["smile"], "auditory": [], "emotional": []},
    }
    rep = score(pred, ref, emb())
    per = rep.per_sample
    assert per["empty_ref"]["visual"] is None  # skipped, not 0
    assert per["empty_pred"]["visual"] == {"recall": 0.0, "precision": 0.0, "f1": 0.0}
    # "the text says hi" contains "text": dropped, which leaves an empty prediction -> 0.
    assert per["empty_pred"]["auditory"]["f1"] == 0.0
    # the only auditory reference quotes the subtitle: dropped on both sides -> the sample is skipped.
    assert per["subtitle"]["auditory"] is None
    # the release scores a prediction without an "emotional" key as 0 before it looks at the reference.
    assert per["no_emotional_key"]["emotional"]["f1"] == 0.0
    assert "never_predicted" not in per and "not_in_reference" not in per
    v, a, e = (rep.categories[c] for c in ("visual", "auditory", "emotional"))
    assert v.n == 3 and v.f1 == pytest.approx(2 / 3)  # empty_ref skipped; empty_pred 0; two perfect
    assert a.n == 3 and a.f1 == pytest.approx(2 / 3)  # empty_ref 1, empty_pred 0, subtitle skipped, 1
    assert e.n == 4 and e.f1 == pytest.approx(3 / 4)  # no_emotional_key counted as 0 despite its empty ref
    cov = rep.coverage
    assert cov["missing"] == ["never_predicted"] and cov["extra"] == ["not_in_reference"]
    assert cov["n_scored"] == 4 and cov["coverage"] == pytest.approx(4 / 5)
    assert v.n_missing == 1
    assert v.missing_as_zero["f1"] == pytest.approx(2 / 4)  # the missing sample counted as 0


def test_duplicates_pay_under_max_but_not_one_to_one() -> None:
    ref = {"s": {"visual": ["smile", "frown"], "auditory": ["loud voice"], "emotional": ["happy"]}}
    pred = {"s": {"visual": ["smile", "smiling", "smile"], "auditory": ["loud voice"], "emotional": ["happy"]}}
    mx = score(pred, ref, emb(), "max").categories["visual"]
    # max: every duplicate finds "smile" again -> precision 1; recall (1 + 0)/2.
    assert mx.precision == pytest.approx(1.0) and mx.recall == pytest.approx(0.5)
    assert mx.f1 == pytest.approx(f1(1.0, 0.5))
    oo = score(pred, ref, emb(), "one-to-one", threshold=0.5).categories["visual"]
    # one-to-one: only one "smile" can be matched; frown's best partner (cos 0) is under the threshold.
    assert oo.precision == pytest.approx(1 / 3) and oo.recall == pytest.approx(0.5)
    assert oo.f1 == pytest.approx(f1(1 / 3, 0.5))
    assert oo.f1 < mx.f1


def test_one_to_one_threshold_drops_weak_pairs() -> None:
    sim = np.array([[R2, 0.0], [0.0, 0.9]])
    assert match_scores(sim, "one-to-one", threshold=0.5) == pytest.approx(((R2 + 0.9) / 2, (R2 + 0.9) / 2))
    assert match_scores(sim, "one-to-one", threshold=0.8) == pytest.approx((0.9 / 2, 0.9 / 2))
    # the optimal assignment, not the greedy one: greedy takes 0.95 first and is left with 0.
    sim2 = np.array([[0.95, 0.9], [0.85, 0.0]])
    r, p = match_scores(sim2, "one-to-one", threshold=0.0)
    assert r == pytest.approx((0.9 + 0.85) / 2)


def test_embeddings_are_batched_and_cached() -> None:
    inner = emb()
    cached = CachedEmbedder(inner)
    ref = {"s1": {"visual": ["smile", "frown"]}, "s2": {"visual": ["smile"]}}
    pred = {"s1": {"visual": ["smile"]}, "s2": {"visual": ["smile", "frown"]}}
    score(pred, ref, cached)
    assert len(inner.calls) == 1 and sorted(inner.calls[0]) == ["frown", "smile"]  # one batch, distinct texts
    score(pred, ref, cached)
    assert len(inner.calls) == 1  # second run: all cached


def test_bad_cue_files_raise_typed_errors() -> None:
    with pytest.raises(CueFormatError):
        score({"s": {"visual": "smile"}}, ["not", "a", "mapping"], emb())
    with pytest.raises(CueFormatError):
        score({"s": {"visual": [1, 2]}}, {"s": {"visual": ["smile"]}}, emb())
    with pytest.raises(CueFormatError):
        score({"s": "smile"}, {"s": {"visual": ["smile"]}}, emb())


def test_no_scored_samples_gives_none_not_a_crash() -> None:
    rep = score({}, {"s": {"visual": ["smile"]}}, emb())
    assert rep.categories["visual"].f1 is None and rep.coverage["missing"] == ["s"]


# --- the real all-MiniLM-L6-v2 -------------------------------------------------------------------------------

CUES = {
    "visual": ["A woman is using a phone.", "The corners of her mouth are upturned.", "She nods slightly."],
    "auditory": [
        "The voice is loud.",
        "The tone remains calm.",
        "Laughter is perceptible.",
        "Subtitle text: 'See you then.'",
    ],
    "emotional": ["She is likely receiving good news.", "Her mood is pleasant."],
}


def test_minilm_identical_lists_score_one(minilm: CachedEmbedder) -> None:
    rep = score({"x": CUES}, {"x": CUES}, minilm)
    for c in ("visual", "auditory", "emotional"):
        assert rep.categories[c].f1 == pytest.approx(1.0, abs=1e-4)
    assert minilm.encode(["smile"]).shape == (1, 384)


def test_minilm_paraphrase_beats_unrelated(minilm: CachedEmbedder) -> None:
    ref = {"x": {"visual": ["He frowns and clenches his jaw."]}}
    para = score({"x": {"visual": ["His brows are furrowed and his jaw is tight."]}}, ref, minilm)
    other = score({"x": {"visual": ["The room has a wooden floor."]}}, ref, minilm)
    assert para.categories["visual"].f1 > other.categories["visual"].f1 + 0.2


def test_minilm_duplicates_max_vs_one_to_one(minilm: CachedEmbedder) -> None:
    ref = {"x": {"visual": ["She smiles.", "She is sitting in a car.", "She wears a red scarf."]}}
    pred = {"x": {"visual": ["She smiles.", "She smiles.", "She smiles.", "She smiles."]}}
    mx = score(pred, ref, minilm, "max").categories["visual"]
    oo = score(pred, ref, minilm, "one-to-one", threshold=0.5).categories["visual"]
    assert mx.precision == pytest.approx(1.0, abs=1e-4)  # four copies of one cue: perfect precision under max
    assert oo.precision == pytest.approx(0.25, abs=0.05)  # one copy can be matched
    assert oo.f1 < mx.f1 - 0.2


def _release_style(pred: dict, ref: dict, model) -> dict:  # noqa: ANN001 - a SentenceTransformer
    """The released procedure written out step by step: iterate over the predictions, encode each sample's
    lists separately (no batching across samples, no cache), model.similarity, max over each axis."""
    out = {}
    for cat in ("visual", "auditory", "emotional"):
        rs, ps, fs = [], [], []
        for sid, entry in pred.items():
            if cat == "emotional" and cat not in entry:
                rs.append(0.0), ps.append(0.0), fs.append(0.0)
                continue
            p, g = entry[cat], ref[sid][cat]
            if cat == "auditory":
                p, g = [x for x in p if "text" not in x], [x for x in g if "text" not in x]
            if not g:
                continue
            if not p:
                r = pr = 0.0
            else:
                sim = model.similarity(model.encode(g), model.encode(p))
                r, pr = sim.max(dim=1).values.mean().item(), sim.max(dim=0).values.mean().item()
            rs.append(r), ps.append(pr), fs.append(2 * r * pr / (r + pr) if r + pr > 0 else 0.0)
        out[cat] = (sum(rs) / len(rs), sum(ps) / len(ps), sum(fs) / len(fs))
    return out


def test_minilm_matches_the_released_procedure(minilm: CachedEmbedder) -> None:
    ref = {
        "a": {
            "visual": ["She smiles.", "She nods."],
            "auditory": ["Her voice is loud.", "Subtitle text: 'Hi.'"],
            "emotional": ["She is happy.", "She expects good news."],
        },
        "b": {
            "visual": ["He frowns.", "His fists are clenched."],
            "auditory": ["He shouts."],
            "emotional": ["He is angry."],
        },
        "c": {"visual": [], "auditory": ["A long sigh."], "emotional": ["She is tired."]},
    }
    pred = {
        "a": {
            "visual": ["She is smiling.", "She is smiling.", "The room is bright."],
            "auditory": ["Loud voice."],
            "emotional": ["Happy mood."],
        },
        "b": {"visual": [], "auditory": ["The text he says is rude.", "He yells."]},
        "c": {"visual": ["A woman sits."], "auditory": ["She sighs."], "emotional": ["She feels exhausted."]},
    }
    ours = score(pred, ref, minilm)
    release = _release_style(pred, ref, minilm.inner._load())
    for cat, (r, p, f) in release.items():
        got = ours.categories[cat]
        assert (got.recall, got.precision, got.f1) == (
            pytest.approx(r, abs=1e-5),
            pytest.approx(p, abs=1e-5),
            pytest.approx(f, abs=1e-5),
        )
