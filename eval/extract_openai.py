"""Cue extraction through any OpenAI-compatible chat endpoint, as the EmoCue-360 authors did.

One system prompt with one worked example, JSON mode (`response_format={"type": "json_object"}`), temperature
0. The reply is parsed and validated (three lists of strings); a reply that fails is retried with a reminder,
and after `settings.eval.openai_retries` failed retries the offline extractor answers instead, with a warning,
so a weak or unreachable model degrades a benchmark instead of aborting it.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx

from eval.emocue360 import CATEGORIES, Cues
from eval.extract_offline import OfflineExtractor
from xemo.settings import EvalSettings

log = logging.getLogger("xemo.eval.extract")

EXAMPLE_DESCRIPTION = (
    "In the video, a young man sits at a desk in a dim office, staring at a letter. His brows are drawn together "
    "and his lips are pressed tightly, and at one point he rubs his forehead with his hand. In the audio, he "
    "speaks slowly in a low, heavy voice and sighs before the last word. The subtitle says, \"So that's it, "
    'then." Combining his tense face, the sigh and the resigned words, he seems to have received disappointing '
    "news, and the overall emotion is sadness mixed with frustration."
)
EXAMPLE_CUES = {
    "visual": [
        "A young man sits at a desk.",
        "The office is dim.",
        "He stares at a letter.",
        "His brows are drawn together.",
        "His lips are pressed tightly.",
        "He rubs his forehead with his hand.",
    ],
    "auditory": [
        "He speaks slowly.",
        "His voice is low and heavy.",
        "He sighs before the last word.",
        "Subtitle text: 'So that's it, then.'",
    ],
    "emotional": [
        "He seems to have received disappointing news.",
        "His words sound resigned.",
        "The tense face and the sigh convey distress.",
        "He feels sad.",
        "He feels frustrated.",
    ],
}
SYSTEM_PROMPT = f"""You split a description of a person's emotional state in a video into atomic cues.
Return one JSON object with exactly three keys, each a list of short, self-contained statements:
"visual" (what is seen: face, gaze, gestures, posture, clothing, setting),
"auditory" (what is heard: voice, tone, pitch, loudness, pace, laughter, sighs; quoted speech as
"Subtitle text: '...'"), and "emotional" (the inferred feelings, intentions and the reasoning about them).
One fact per statement. Do not invent cues that the description does not contain.

Worked example.
Description: {EXAMPLE_DESCRIPTION}
JSON: {json.dumps(EXAMPLE_CUES)}"""

_PERSON = {
    "he": "x",
    "she": "x",
    "they": "x",
    "his": "y",
    "her": "y",
    "him": "y",
    "their": "y",
    "man": "p",
    "woman": "p",
    "lady": "p",
    "girl": "p",
    "boy": "p",
    "person": "p",
}


def _norm(cue: str) -> str:
    # Pronouns and person nouns are swapped when a model copies the example for a clip of a woman.
    return " ".join(_PERSON.get(w, w) for w in re.findall(r"[a-z']+", cue.lower()))


_EXAMPLE_SET = {_norm(c) for xs in EXAMPLE_CUES.values() for c in xs}


def echoes_example(cues: Cues) -> bool:
    """Small models often copy the worked example instead of reading the description: half or more of the
    returned cues equal to example cues (up to pronouns) counts as a failed reply."""
    flat = [_norm(c) for xs in cues.values() for c in xs]
    return bool(flat) and sum(c in _EXAMPLE_SET for c in flat) * 2 >= len(flat)


REMINDER = (
    'Answer with only a JSON object of the form {"visual": [...], "auditory": [...], "emotional": [...]} '
    "whose lists hold short strings."
)

_ALIASES = {
    "visual": "visual",
    "vision": "visual",
    "video": "visual",
    "auditory": "auditory",
    "audio": "auditory",
    "acoustic": "auditory",
    "emotional": "emotional",
    "emotion": "emotional",
    "emotions": "emotional",
    "affective": "emotional",
}


class ExtractionFailed(ValueError):
    """The endpoint answered, but not with usable cue lists."""


def parse_cues(content: str) -> Cues:
    """The three cue lists from a model reply; raises ExtractionFailed when none can be recovered."""
    content = (content or "").strip()
    try:
        data: Any = json.loads(content)
    except json.JSONDecodeError:
        m = re.search(r"\{.*\}", content, re.S)  # models sometimes wrap the object in prose or fences
        if not m:
            raise ExtractionFailed("the reply holds no JSON object") from None
        try:
            data = json.loads(m.group(0))
        except json.JSONDecodeError as e:
            raise ExtractionFailed(f"the reply is not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ExtractionFailed("the reply is JSON but not an object")
    out: Cues = {c: [] for c in CATEGORIES}
    found = False
    for key, val in data.items():
        cat = _ALIASES.get(str(key).strip().lower())
        if cat is None:
            continue
        found = True
        items = [val] if isinstance(val, str) else val if isinstance(val, list) else []
        for it in items:
            if isinstance(it, str) and it.strip() and it.strip() not in out[cat]:
                out[cat].append(it.strip())
    if not found or not any(out.values()):
        raise ExtractionFailed("the reply has no visual/auditory/emotional cue lists")
    return out


class OpenAIExtractor:
    """Chat-completions client (httpx) with validation, retries and an offline fallback."""

    name = "openai"

    def __init__(
        self,
        settings: EvalSettings,
        fallback: OfflineExtractor | None,
        client: httpx.Client | None = None,
        max_tokens: int = 768,
    ) -> None:
        self.settings = settings
        self.max_tokens = max_tokens
        self.fallback = fallback
        headers = {"Content-Type": "application/json"}
        if settings.openai_api_key is not None:
            headers["Authorization"] = f"Bearer {settings.openai_api_key.get_secret_value()}"
        self.client = client or httpx.Client(timeout=settings.openai_timeout_s, headers=headers)
        self.url = settings.openai_base_url.rstrip("/") + "/chat/completions"
        self.stats = {"ok": 0, "retried": 0, "fallback": 0}
        self.last_reply: str | None = None  # the raw content of the latest completion (for diagnostics)

    def _ask(self, text: str, reminder: bool) -> str:
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Description: {text}\nJSON:"},
        ]
        if reminder:
            messages.append({"role": "user", "content": REMINDER})
        body = {
            "model": self.settings.openai_model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "response_format": {"type": "json_object"},
        }
        r = self.client.post(self.url, json=body)
        if r.status_code >= 400:
            raise ExtractionFailed(f"HTTP {r.status_code} from the chat endpoint")
        try:
            self.last_reply = r.json()["choices"][0]["message"]["content"] or ""
            return self.last_reply
        except (ValueError, KeyError, IndexError, TypeError):
            raise ExtractionFailed("the endpoint's reply is not a chat completion") from None

    def extract(self, text: str) -> Cues:
        err: Exception | None = None
        for attempt in range(1 + max(0, self.settings.openai_retries)):
            try:
                cues = parse_cues(self._ask(text, reminder=attempt > 0))
                if echoes_example(cues):
                    raise ExtractionFailed("the reply repeats the worked example")
                self.stats["ok"] += 1
                self.stats["retried"] += int(attempt > 0)
                return cues
            except (ExtractionFailed, httpx.HTTPError) as e:
                err = e
        self.stats["fallback"] += 1
        if self.fallback is None:
            raise ExtractionFailed(f"cue extraction failed: {err}")
        log.warning("openai cue extraction failed (%s); using the offline extractor for this description", err)
        return self.fallback.extract(text)

    def extract_many(self, texts: dict[str, str]) -> dict[str, Cues]:
        return {k: self.extract(v) for k, v in texts.items()}

    def close(self) -> None:
        self.client.close()
