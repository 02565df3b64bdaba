"""Default reward settings: the recipe configs embed these under `config.rewards`.

`reward_defaults()` is the whole reward block (component weights, format, people_focus, judge);
`people_focus_defaults()` is its `people_focus` part, also usable on its own by
`people_focus.score_text` / `people_focus.build` when they get `cfg=None`.

Keyword lists (decided here, since the plan lists a few words and then "…"):

- people (+1.0): the plan's person, people, man, woman, facial, face, expression, gesture, body,
  posture, eye, interaction, character, individual, plus the unambiguous person nouns men/women
  (as irregular plurals), boy, girl, child/children, kid, adult, speaker, listener, and the
  people cues gaze, emotion, voice, and the phrases "body language" and "eye contact".
  Pronouns (he, she, they, his, her, him, their) are NOT listed: whole-word matching fixes the
  fork's "he" in "the" bug, but pronouns occur in almost any narrative sentence, so counting
  them would reward pronoun-heavy text rather than attention to people, and "they/it" also refer
  to objects. Emotion names (happy, angry, …) are not listed either: they are the answers of the
  EMER questions, and the accuracy reward already covers them.
- action (+0.5): the plan's talk, speak, walk, smile, laugh, cry, nod, wave, point, look, turn,
  sit, stand, plus visible person actions frown, shrug, glance, stare, listen, whisper, shout,
  hug, lean, grin, sigh, blink. "say", "ask" and "answer" are left out: reasoning text uses them
  about the question itself ("the question asks", "the answer is").
- environment (−0.3): the plan's background, scene, setting, lighting, location, weather, time,
  "color scheme", plus room, building, sky, wall, floor, street, furniture, scenery, landscape,
  indoor, outdoor and the phrase "camera angle".

Inflections: with `inflect="noun"` a word also matches its plural; with `inflect="verb"` its -s,
-ing and -ed forms (English spelling rules: smile → smiles/smiling/smiled, nod → nodding/nodded,
cry → cries/cried); `irregular_forms` adds the forms rules cannot make (men, sat, stood, spoke).
For a phrase only the last word is inflected ("color schemes"). Forms that rules make for
irregular words ("sitted") are harmless: they never occur.

`missing_think`: what people_focus gives a completion without a complete `<think>…</think>`
block (first "<think>", then the first "</think>" after it): "zero" (default) scores 0, so a model
cannot earn people_focus by dropping its reasoning block or writing people words elsewhere; the
format reward already checks the structure. "whole_text" scores the whole completion instead,
as the AffectOmni fork did.
"""

from __future__ import annotations

import ml_collections

_PEOPLE = [
    "person", "people", "man", "woman", "boy", "girl", "child", "kid", "adult", "individual",
    "character", "speaker", "listener", "face", "facial", "expression", "gesture", "body",
    "posture", "eye", "gaze", "interaction", "emotion", "voice", "body language", "eye contact",
]
_ACTION = [
    "talk", "speak", "walk", "smile", "laugh", "cry", "nod", "wave", "point", "look", "turn", "sit",
    "stand", "frown", "shrug", "glance", "stare", "listen", "whisper", "shout", "hug", "lean",
    "grin", "sigh", "blink",
]
_ENVIRONMENT = [
    "background", "scene", "setting", "lighting", "location", "weather", "time", "color scheme",
    "room", "building", "sky", "wall", "floor", "street", "furniture", "scenery", "landscape",
    "indoor", "outdoor", "camera angle",
]
_IRREGULAR = {
    "man": ["men"],
    "woman": ["women"],
    "child": ["children"],
    "sit": ["sat"],
    "stand": ["stood"],
    "speak": ["spoke", "spoken"],
}


def people_focus_defaults() -> ml_collections.ConfigDict:
    """The recipe's people_focus reward: keyword categories, weights, normaliser, policies.

    score = clip(sum_c count_c * categories.c.weight / normaliser, 0, 1), counts taken inside the
    first complete <think>…</think> block (see the module docstring for every choice).
    """
    c = ml_collections.ConfigDict()
    c.categories = ml_collections.ConfigDict()
    c.categories.people = dict(weight=1.0, inflect="noun", words=list(_PEOPLE))
    c.categories.action = dict(weight=0.5, inflect="verb", words=list(_ACTION))
    c.categories.environment = dict(weight=-0.3, inflect="noun", words=list(_ENVIRONMENT))
    c.irregular_forms = {k: list(v) for k, v in _IRREGULAR.items()}
    c.normaliser = 20.0
    c.missing_think = "zero"  # or "whole_text"
    return c


def judge_defaults() -> ml_collections.ConfigDict:
    """The optional LLM judge that replaces the keyword people_focus score (off by default)."""
    c = ml_collections.ConfigDict()
    c.enabled = False
    c.endpoint = "http://127.0.0.1:8000/v1/chat/completions"  # OpenAI-compatible
    c.model = "qwen2.5-72b-instruct"
    c.api_key_env = "OMNI_JAX_JUDGE_API_KEY"  # name of the environment variable, never the key
    c.timeout_s = 30.0  # the whole request: connect, send, wait, read
    c.max_reply_bytes = 1 << 20  # a longer reply is abandoned unread (a rating is a few bytes)
    c.max_retries = 3
    c.backoff_s = 1.0  # first retry waits this long, then doubles
    c.max_concurrency = 8
    c.cache_dir = ""  # "" disables the on-disk cache
    c.max_tokens = 16
    return c


def reward_defaults() -> ml_collections.ConfigDict:
    """The recipe's reward block: total = Σ weights[k] * component[k]."""
    c = ml_collections.ConfigDict()
    c.weights = dict(format=1.0, accuracy=1.0, people_focus=1.0)
    c.format = dict(require_context=True)
    c.people_focus = people_focus_defaults()
    c.judge = judge_defaults()
    return c
