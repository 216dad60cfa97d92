"""The grounding check and the sentence gate that applies it while an explanation streams."""

from engines.lite.grounding import ABSENCE, SentenceGate, split_sentences, ungrounded


def test_flags_a_sentence_about_a_modality_without_cues() -> None:
    text = "In the video, the corners of the mouth turn up. In the audio, the voice is loud."
    flags = ungrounded(text, {"visual"})
    assert [f.modality for f in flags] == ["auditory"]
    assert flags[0].sentence == "In the audio, the voice is loud."
    assert "voice" in flags[0].words


def test_grounded_text_passes() -> None:
    text = "In the video, the brows are drawn together. The words \"stop it\" sound angry."
    assert ungrounded(text, {"visual", "verbal"}, transcript="Stop it, now!") == []


def test_quotes_must_come_from_the_transcript() -> None:
    text = 'The words "I just don\'t know anymore" read as hopeless.'
    flags = ungrounded(text, {"verbal"}, transcript="Everything is fine.")
    assert [(f.modality, f.words) for f in flags] == [("verbal", ["I just don't know anymore"])]
    assert ungrounded(text, {"verbal"}, transcript="well, I JUST don't know anymore...") == []


def test_absence_statements_are_facts_not_claims() -> None:
    assert ungrounded(ABSENCE["visual"] + " " + ABSENCE["auditory"], set()) == []


def test_gate_releases_whole_checked_sentences_only() -> None:
    gate = SentenceGate({"visual"})
    out = []
    for piece in ["In the video, the mouth", " opens wide. In the", " audio, her voice", " rises. Then more."]:
        out.append(gate.feed(piece))
    assert "".join(out) == "In the video, the mouth opens wide. "
    assert gate.closed
    assert gate.dropped[0].modality == "auditory"
    assert gate.flush() == ""


def test_gate_flushes_an_unfinished_grounded_sentence() -> None:
    gate = SentenceGate({"auditory"})
    assert gate.feed("In the audio, the pitch is high") == ""
    assert gate.flush() == "In the audio, the pitch is high"


def test_split_sentences() -> None:
    assert split_sentences("A b. C d!  E f? ") == ["A b.", "C d!", "E f?"]
