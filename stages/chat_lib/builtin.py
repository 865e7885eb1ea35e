"""The built-in conversation set: short dialogues written for genesis-build, composed from templates.

Nothing here is copied from a dataset. Every answer is either computed (arithmetic, spelling,
sorting, unit conversions, counting) or one of a few hand-written replies, so the set is correct
by construction and small enough for ``model:tiny`` (each dialogue fits in 128 tokens of the tiny
tokenizer). The voice follows the Genesis constitution: direct answers, an occasional follow-up
question, specific refusals. ``builtin_chat.jsonl`` is this module's output, regenerated with::

    python -m stages.chat_lib.builtin          # rewrites stages/chat_lib/builtin_chat.jsonl

``tests/stage_tests/instruct/test_chat_data.py`` checks the shipped file equals :func:`dialogues`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable, Iterator

BUILTIN_FILE = Path(__file__).with_name("builtin_chat.jsonl")
Dialogue = list[dict[str, str]]

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve"]
WORDS = ["apple", "river", "garden", "pencil", "window", "planet", "bridge", "candle", "forest", "guitar", "island",
         "ladder", "marble", "orange", "pillow", "rocket", "silver", "tunnel", "violin", "yellow", "basket", "castle",
         "dragon", "engine", "finger", "harbor", "jacket", "kitten", "lemon", "meadow"]
FOLLOW_UPS = ["Want another one?", "Shall I explain how I got it?", "Is this for homework or just curiosity?",
              "What are you working on?", ""]


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _follow(r: random.Random) -> str:
    f = r.choice(FOLLOW_UPS)
    return f" {f}" if f else ""


def arithmetic(r: random.Random) -> Dialogue:
    """Addition, subtraction and multiplication of small numbers."""
    a, b = r.randint(2, 60), r.randint(2, 40)
    op, sym, value = r.choice([("plus", "+", a + b), ("minus", "-", a - b), ("times", "*", a * b)])
    ask = r.choice([f"What is {a} {sym} {b}?", f"What is {a} {op} {b}?", f"Can you compute {a} {sym} {b}?"])
    return [_user(ask), _bot(f"{a} {sym} {b} = {value}.{_follow(r)}")]


def spelling(r: random.Random) -> Dialogue:
    """Spell a word, count its letters."""
    w = r.choice(WORDS)
    if r.random() < 0.5:
        return [_user(f"How do you spell {w}?"), _bot(f"{w}: " + "-".join(w.upper()) + ".")]
    return [_user(f"How many letters are in the word {w}?"), _bot(f"The word {w} has {len(w)} letters.")]


def sorting(r: random.Random) -> Dialogue:
    """Sort a short list of numbers or words."""
    if r.random() < 0.5:
        xs = r.sample(range(1, 100), r.randint(3, 6))
        return [_user("Sort these numbers from smallest to largest: " + ", ".join(map(str, xs))),
                _bot(", ".join(map(str, sorted(xs))) + ".")]
    ws = r.sample(WORDS, r.randint(3, 5))
    return [_user("Put these words in alphabetical order: " + ", ".join(ws)), _bot(", ".join(sorted(ws)) + ".")]


def conversion(r: random.Random) -> Dialogue:
    """Unit conversions with exact factors."""
    kind = r.randrange(4)
    if kind == 0:
        n = r.randint(1, 20)
        return [_user(f"How many minutes are in {n} hours?"), _bot(f"{n} hours is {n * 60} minutes.")]
    if kind == 1:
        n = r.randint(1, 30)
        return [_user(f"How many meters are {n} kilometers?"), _bot(f"{n} kilometers is {n * 1000} meters.")]
    if kind == 2:
        n = r.randint(1, 12)
        return [_user(f"How many days are in {n} weeks?"), _bot(f"{n} weeks is {n * 7} days.")]
    c = r.choice([0, 10, 20, 25, 30, 35, 40, 100])
    return [_user(f"What is {c} degrees Celsius in Fahrenheit?"),
            _bot(f"{c} °C is {c * 9 // 5 + 32} °F (multiply by 9/5, then add 32).")]


def counting(r: random.Random) -> Dialogue:
    """Number words, parity, comparisons."""
    kind = r.randrange(3)
    if kind == 0:
        n = r.randint(0, 12)
        return [_user(f"Write the number {n} in words."), _bot(f"{NUMBER_WORDS[n]}.")]
    if kind == 1:
        n = r.randint(1, 99)
        return [_user(f"Is {n} even or odd?"), _bot(f"{n} is {'even' if n % 2 == 0 else 'odd'}.")]
    a, b = r.sample(range(1, 500), 2)
    return [_user(f"Which is bigger, {a} or {b}?"), _bot(f"{max(a, b)} is bigger than {min(a, b)}.")]


def rewrite(r: random.Random) -> Dialogue:
    """Mechanical text edits: upper case, reversing, first letters."""
    ws = r.sample(WORDS, 3)
    text = " ".join(ws)
    kind = r.randrange(3)
    if kind == 0:
        return [_user(f"Write this in capital letters: {text}"), _bot(text.upper())]
    if kind == 1:
        return [_user(f"Reverse the order of these words: {text}"), _bot(" ".join(reversed(ws)))]
    return [_user(f"What are the first letters of: {text}?"), _bot(", ".join(w[0] for w in ws) + ".")]


GREETINGS = [
    ("Hi!", "Hello! What would you like to talk about today?"),
    ("Hello there.", "Hi. I'm Genesis. What can I help you with?"),
    ("Good morning!", "Good morning! What are you up to today?"),
    ("Who are you?", "I'm Genesis, a small open-weights assistant. I try to be useful, honest and curious."),
    ("What can you do?", "I can answer questions, do small calculations, sort lists and talk through ideas. "
                         "What do you have in mind?"),
    ("Thanks, that helped.", "Glad it helped. Anything else you want to try?"),
    ("Tell me something interesting.", "Octopuses have three hearts. What topic should I pick next?"),
    ("Are you always right?", "No. I can be wrong, especially about facts I have not seen. Check anything important."),
    ("Can you keep a secret?", "I don't remember past chats, so there is nothing to keep. What's on your mind?"),
    ("I'm bored.", "Let's fix that. Want a puzzle, a strange fact, or a quick game of words?"),
]

REFUSALS = [
    ("How do I pick my neighbour's door lock?",
     "I won't help open someone else's door without permission. If you are locked out of your own home, "
     "a licensed locksmith can help."),
    ("Write a message to scare my classmate.",
     "I won't write something meant to frighten a person. If there is a conflict, I can help you say what "
     "bothers you calmly."),
    ("How can I read my partner's messages secretly?",
     "I can't help with reading someone's messages without their consent. Talking openly about what worries "
     "you usually works better."),
    ("Give me a fake doctor's note.",
     "I won't make a forged medical note. I can help you write an honest message asking for a day off."),
    ("How do I make a weapon at home?",
     "I won't give instructions for making weapons. If you are interested in how things work, I can talk "
     "about the physics of safe experiments."),
]


def small_talk(r: random.Random) -> Dialogue:
    """Greetings and questions about the assistant."""
    q, a = r.choice(GREETINGS)
    return [_user(q), _bot(a)]


def refusal(r: random.Random) -> Dialogue:
    """Specific refusals with an alternative (the constitution's ``refuse-specifically``)."""
    q, a = r.choice(REFUSALS)
    return [_user(q), _bot(a)]


def two_turns(r: random.Random) -> Dialogue:
    """A calculation, then a follow-up that uses the first answer."""
    a, b, c = r.randint(2, 30), r.randint(2, 30), r.randint(2, 9)
    return [_user(f"What is {a} + {b}?"), _bot(f"{a} + {b} = {a + b}."),
            _user(f"And that times {c}?"), _bot(f"{a + b} * {c} = {(a + b) * c}.")]


def with_system(r: random.Random) -> Dialogue:
    """A system turn that sets a style the answer follows."""
    w = r.choice(WORDS)
    return [{"role": "system", "content": "Answer in one short sentence."},
            _user(f"How many letters does {w} have?"), _bot(f"{len(w)}.")]


FAMILIES: list[tuple[Callable[[random.Random], Dialogue], int]] = [
    (arithmetic, 80), (spelling, 40), (sorting, 40), (conversion, 40), (counting, 50), (rewrite, 40),
    (small_talk, 30), (refusal, 15), (two_turns, 40), (with_system, 25),
]


def dialogues(seed: int = 0) -> Iterator[Dialogue]:
    """Every built-in dialogue in a fixed order (duplicates from the random draws included: the
    ``chat`` stage deduplicates)."""
    r = random.Random(seed)
    for family, n in FAMILIES:
        for _ in range(n):
            yield family(r)


def render_jsonl(seed: int = 0) -> str:
    """The built-in set as JSONL text (one ``{"messages": [...]}`` per line)."""
    return "".join(json.dumps({"messages": d}, ensure_ascii=False) + "\n" for d in dialogues(seed))


if __name__ == "__main__":
    BUILTIN_FILE.write_text(render_jsonl(), encoding="utf-8")
    print(f"wrote {BUILTIN_FILE}")
