"""Explanations grounded by construction: the per-answer cue grammar, its segments, and what it lets through.

The generation tests run SmolLM2 under the grammar at a high temperature over several seeds, with prompts that
push toward text that is not a cue (a soft voice mentioned over and over, an instruction in the transcript).
"""

from __future__ import annotations

import asyncio
import re

import pytest

from engines.lite import explain, prompt
from engines.lite.explain import CONNECTIVES, OPENERS, Explainer, clause
from engines.lite.pipeline import LitePipeline
from engines.llm import SamplingParams
from engines.types import Cue, assign_cue_ids

LABELS = ["neutral", "happy", "sad", "angry", "worried", "surprise"]


def cues_of(*spec: tuple[str, str]) -> list[Cue]:
    cs = [Cue(m, t, 0.0, 2.0, round(1.0 - 0.1 * i, 2)) for i, (m, t) in enumerate(spec)]
    return assign_cue_ids(cs)


LOUD = cues_of(("visual", "smiles"), ("visual", "the eyes squint"), ("visual", "nods"),
               ("auditory", "the voice is loud"), ("auditory", "speaks quickly"),
               ("auditory", "speaks in an intense tone"))
# LOUD's sentences with every offered cue stated, as the grammar requires
V_ALL = " In the video, the person smiles, and the eyes squint, and the person nods."
A_ALL = " In the audio, the voice is loud, and the person speaks quickly, and the person speaks in an intense tone."


def leftover(text: str, ex: Explainer) -> str:
    """What remains of `text` once every cue clause and every phrase of the closed vocabulary is removed."""
    pieces = [c for s in ex.sentences for c, _ in s.clauses]
    pieces += list(OPENERS.values()) + [i for s in ex.sentences for i in ex.interpretations(s.modality)]
    pieces += list(CONNECTIVES)
    for p in sorted(pieces, key=len, reverse=True):
        text = text.replace(p, " ")
    return re.sub(r"[\s.]+", "", text)


def generate(lite: LitePipeline, ex: Explainer, prompt_text: str, seed: int, temperature: float = 1.5) -> str:
    params = SamplingParams(max_tokens=len(lite.llm.tokenize(ex.longest())) + 8, temperature=temperature,
                            top_p=1.0, seed=seed, lark=ex.grammar())

    async def go() -> str:
        return "".join([t.text async for t in lite.llm.generate([prompt_text], params)])

    return asyncio.run(go())


def test_clauses_keep_the_cue_phrase() -> None:
    assert clause(Cue("visual", "smiles")) == "the person smiles"
    assert clause(Cue("visual", "lips pressed together")) == "the face shows lips pressed together"
    assert clause(Cue("auditory", "the voice is loud")) == "the voice is loud"
    assert clause(Cue("verbal", 'says: "hi"')) == 'the person says "hi"'
    for c in LOUD:
        assert c.text in clause(c)


def test_grammar_compiles_and_segments_parse_the_text_it_allows() -> None:
    import llguidance

    ex = Explainer(LOUD, "happy", {"happy": 0.5, "angry": 0.4, "sad": 0.1})
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        llguidance.LLMatcher.grammar_from_lark(ex.grammar()))
    assert not failed, messages
    assert ex.runner == "angry"  # close scores: the runner-up may be read and is named in the conclusion
    assert explain.conclusion(ex.label, ex.runner) == (
        " It can be inferred that the person's emotional state is happy, or possibly angry.")
    text = (" In the video, the eyes squint, and the person smiles. This suggests happiness."
            " In the audio, the person speaks in an intense tone. This indicates anger.")
    segs = ex.segments(text)
    assert "".join(s.text for s in segs) == text
    assert [(s.kind, s.cue_ids) for s in segs] == [("observation", ["v2", "v1"]), ("interpretation", ["v2", "v1"]),
                                                   ("observation", ["a3"]), ("interpretation", ["a3"])]
    # an unfinished sentence is not a segment yet
    assert len(ex.segments(text[:-1])) == 3


def accepts(ex: Explainer, text: str) -> bool:
    """Whether the answer's grammar allows `text` (llguidance's byte-level tokenizer: any text is some token list)."""
    import llguidance

    tok = llguidance.LLTokenizer("byte")
    m = llguidance.LLMatcher(tok, llguidance.LLMatcher.grammar_from_lark(ex.grammar()), log_level=0)
    assert not m.is_error(), m.get_error()
    return m.consume_tokens(tok.tokenize_str(text)) and m.is_accepting()


def test_each_sentence_is_read_once_while_readings_last_and_no_reading_twice() -> None:
    """A reading of the label (or the close runner-up) after every sentence while one is left; the same reading
    never twice; a sentence is left unread only when its readings are used up."""
    cues = [*LOUD, *cues_of(("verbal", 'says: "we won"'))]
    ex = Explainer(cues, "happy", {"happy": 0.9, "sad": 0.1})
    assert ex.runner is None and ex.readings == list(explain.readings("happy"))
    v, a, t = V_ALL, A_ALL, ' In the text, the person says "we won".'
    sv, ia, it = " This suggests happiness.", " This indicates a cheerful mood.", " This implies satisfaction."
    assert accepts(ex, v + sv + a + ia + t + it)
    assert not accepts(ex, v + a + t)  # unread sentences while readings are left
    assert not accepts(ex, v + sv + a + ia + t)  # the text's sentence still has a reading left
    assert not accepts(ex, v + " This suggests happiness." + a + " This indicates happiness." + t + it)  # twice
    assert not accepts(ex, v + " This suggests sadness." + a + ia + t + it)  # not a reading of this label
    assert not accepts(ex, v + " This indicates happiness." + a + ia + t + it)  # the video's read as video
    assert not accepts(ex, " In the video, the person smiles and the eyes squint, and the person nods." + sv + a + ia
                       + t + it)  # merged clauses
    assert accepts(ex, " In the video, the person nods, while the eyes squint; the person smiles." + sv + a + ia + t
                   + it)  # any order, any connectives
    assert not accepts(ex, " In the video, the person smiles, and the eyes squint." + sv + a + ia + t + it)  # one left
    assert not accepts(ex, " In the video, the person smiles, and the eyes squint, and the person smiles." + sv + a
                       + ia + t + it)  # repeated
    # a label with one reading: the first sentence reads it, the others go unread
    one = Explainer(cues, "neutral", {"neutral": 0.9, "sad": 0.1})
    assert one.readings == ["a composed state"]
    assert accepts(one, v + " This suggests a composed state." + a + t)
    assert not accepts(one, v + a + " This indicates a composed state." + t)
    assert not accepts(one, v + a + t)
    assert explain.conclusion("happy", None) == " It can be inferred that the person's emotional state is happy."


def test_a_reading_never_contradicts_the_sentence_it_reads() -> None:
    """A smile is not read as anger, negative wording not as happiness; cues of no clear valence allow either."""
    cues = [*LOUD, *cues_of(("verbal", 'says: "fine"'), ("verbal", "mildly negative wording"))]
    ex = Explainer(cues, "angry", {"angry": 0.5, "happy": 0.45, "sad": 0.05})
    assert ex.runner == "happy"
    per = {s.modality: ex.interpretations(s.modality) for s in ex.sentences}
    assert per["visual"] == [" This suggests happiness.", " This suggests a cheerful mood.",
                             " This suggests satisfaction."]  # the smile: only the runner-up's readings
    assert " This indicates anger." in per["auditory"] and " This indicates happiness." in per["auditory"]
    assert per["verbal"] == [" This implies anger.", " This implies dissatisfaction.", " This implies impatience."]
    v, a = V_ALL, A_ALL
    t = ' In the text, the person says "fine", and the text has mildly negative wording.'
    assert not accepts(ex, v + " This suggests anger." + a + t)
    assert accepts(ex, v + " This suggests happiness." + a + " This indicates anger." + t
                   + " This implies dissatisfaction.")
    # a face with no clear valence may be read either way
    plain = Explainer(cues_of(("visual", "nods"), ("visual", "blinks")), "angry", {"angry": 1.0})
    assert plain.interpretations("visual")[0] == " This suggests anger."


def test_each_stated_cue_is_its_own_clause_for_a_cue_extractor() -> None:
    """The connectives split where EMER cue extractors split clauses, so no two cues merge into one claim."""
    from eval.extract_offline import OfflineExtractor

    ex = Explainer(LOUD, "happy", {"happy": 1.0})
    for conn in CONNECTIVES:
        text = "".join(" " + OPENERS[s.modality] + conn.join(c for c, _ in s.clauses) + "." for s in ex.sentences)
        clauses, _ = OfflineExtractor(embedder=None).segment(text.strip())  # type: ignore[arg-type]
        assert len(clauses) == len(LOUD), (conn, [c.text for c in clauses])


def test_text_under_the_constraint_is_only_cue_phrases_and_connectives(lite: LitePipeline) -> None:
    ex = Explainer(LOUD, "happy", {"happy": 0.6, "sad": 0.2, "angry": 0.2})
    base = prompt.build(LOUD, LABELS).label_prompt + " happy\nExplanation:"
    for seed in range(4):
        text = generate(lite, ex, base, seed)
        assert leftover(text, ex) == "", text
        segs = ex.segments(text)
        assert "".join(s.text for s in segs) == text, text  # the whole output parses: nothing outside the grammar
        ids = [i for s in segs if s.kind == "observation" for i in s.cue_ids]
        assert ids and len(ids) == len(set(ids)), text  # every observation cites, no cue is stated twice
        assert {i for s in segs for i in s.cue_ids} <= {c.id for c in LOUD}


def test_no_soft_voice_cue_never_yields_a_soft_voice(lite: LitePipeline) -> None:
    ex = Explainer(LOUD, "sad", {"sad": 0.9, "happy": 0.1})
    # the prompt all but dictates a soft voice; only the grammar stands in the way
    push = ("Cues:\n- voice: the voice is soft; the voice is soft and low\nEmotion: sad\nExplanation: In the audio, "
            "the voice is soft and low. The voice is soft. The voice is soft.\n") * 3
    for seed, temperature in ((0, 0.0), (1, 0.7), (2, 1.0), (3, 1.5)):
        text = generate(lite, ex, push + "Cues:\n- voice: the voice is soft\nEmotion: sad\nExplanation:", seed,
                        temperature)
        assert "soft" not in text.lower(), text


def test_only_the_most_salient_cues_are_offered_and_all_of_them_are_stated() -> None:
    """Past MAX_CUES_PER_MODALITY the least salient cues are left out of the sentence (they stay in the answer's
    cue list): a high pitch, which no EMER description mentions, goes before a loud voice, though stronger."""
    cues = assign_cue_ids([Cue("auditory", t, 0.0, 2.0, p) for t, p in (
        ("the voice is high-pitched", 1.0), ("the voice is loud", 0.6), ("speaks slowly", 0.55),
        ("the tone is calm", 0.5))])
    ex = Explainer(cues, "happy", {"happy": 1.0})
    (s,) = ex.sentences
    assert explain.MAX_CUES_PER_MODALITY == 3
    assert [t for t, _ in s.clauses] == ["the voice is loud", "the person speaks slowly", "the tone is calm"]
    full = " In the audio, the tone is calm, and the voice is loud, and the person speaks slowly."
    assert accepts(ex, full + " This indicates happiness.")
    assert not accepts(ex, " In the audio, the voice is loud, and the person speaks slowly. This indicates happiness.")
    assert not accepts(ex, full[:-1] + ", and the voice is high-pitched. This indicates happiness.")


def test_repeats_are_impossible_even_when_the_prompt_repeats() -> None:
    """The bitset guard: after the last unused clause no connective is offered (checked on the grammar text)."""
    ex = Explainer(cues_of(("visual", "the eyes squint")), "happy", {"happy": 1.0})
    g = ex.grammar()
    assert "%if bit_clear(0)" in g and "%if not(is_ones([0:1]))" in g


@pytest.mark.parametrize("bad", ['quote " inside', "back\\slash", "new\nline"])
def test_cue_text_is_escaped_in_the_grammar(bad: str) -> None:
    import llguidance

    ex = Explainer(cues_of(("verbal", f'says: "{bad}"')), "neutral", {"neutral": 1.0})
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        llguidance.LLMatcher.grammar_from_lark(ex.grammar()))
    assert not failed, messages
