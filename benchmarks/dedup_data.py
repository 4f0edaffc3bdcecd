"""Synthetic instructions with planted near-duplicates whose origin is known.

Base instructions are an opening ("Explain how to", "Write a short story about", ...) and a
body of words drawn from a Zipf-distributed vocabulary (real function words at its head,
pseudo-words in its tail), so unrelated instructions share openings and common words as real
ones do. A planted near-duplicate is a light edit of a base instruction: one or two words
replaced, inserted or deleted, often with its case or punctuation changed too. The order is
shuffled, so a copy may come before its original. Some base instructions are "siblings" of
another: same opening and first part, different rest; they test precision. Everything follows from `seed`.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

OPENINGS = [
    "Write a short story about",
    "Explain how to",
    "Give me a list of",
    "Summarize the following text about",
    "Classify the sentiment of a review about",
    "Translate into French a note about",
    "What is the best way to",
    "How do I",
    "Describe",
    "Compose a poem about",
    "Suggest five names for",
    "Write an email to my manager about",
    "Create a recipe with",
    "Compare and contrast",
    "Generate a quiz question about",
    "Rewrite this sentence about",
    "Find the main idea of a paragraph about",
    "Draft a tweet announcing",
    "Outline a lesson plan on",
    "Give three reasons why",
    "Write a product description for",
    "Explain to a child",
    "List the steps to",
    "Propose a title for an article on",
    "Brainstorm ideas for",
    "Write a dialogue between two people about",
    "Identify the errors in a claim about",
    "Answer the question about",
    "Plan a weekend trip around",
    "Provide feedback on an essay about",
    "Convert to a formal tone a message about",
    "Tell me a fun fact about",
]
FUNCTION_WORDS = (
    "the of and to a in is that for it as with was on be by this are or at from his an which have not they "
    "but had one were all we when your can there use each she do how their if will up other about out many "
    "then them these so some her would make like him into time has look two more write go see number no way "
    "could people my than first water been call who its now find long down day did get come made may part"
).split()
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "ta",
    "vo",
    "si",
    "pe",
    "da",
    "gu",
    "fi",
    "zo",
    "be",
    "ha",
    "jo",
    "ly",
    "wa",
    "qui",
    "sor",
    "tem",
    "bra",
    "cle",
    "dro",
    "fen",
    "gal",
    "mar",
    "nor",
    "pil",
    "tus",
]


@dataclass
class Corpus:
    texts: list[str]
    #: Cluster of each text: a base instruction and its planted copies share one.
    cluster: list[int]

    def expected_drops(self) -> int:
        sizes: dict[int, int] = {}
        for c in self.cluster:
            sizes[c] = sizes.get(c, 0) + 1
        return sum(s - 1 for s in sizes.values())


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    words = list(FUNCTION_WORDS)
    seen = set(words)
    while len(words) < size:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def _edit(rng: random.Random, text: str, draw) -> str:
    words = text.split()
    for _ in range(rng.choice((1, 1, 2))):
        op = rng.choice(("replace", "insert", "delete"))
        i = rng.randrange(len(words))
        if op == "replace":
            words[i] = draw()
        elif op == "insert":
            words.insert(i, draw())
        elif len(words) > 3:
            del words[i]
    out = " ".join(words)
    style = rng.random()
    if style < 0.25:
        out = out.lower()
    elif style < 0.4:
        out = out.upper()
    elif style < 0.55:
        out = out.title()
    punct = rng.random()
    if punct < 0.3:
        out = out.rstrip(".?!") + rng.choice(("?", "!", "...", " ?"))
    elif punct < 0.5:
        ws = out.split()
        j = rng.randrange(len(ws))
        ws[j] += ","
        out = " ".join(ws)
    return out


def make_corpus(
    n: int,
    dup_rate: float = 0.1,
    seed: int = 0,
    vocab: int = 30_000,
    body: tuple[int, int] = (12, 32),
    siblings: float = 0.1,
) -> Corpus:
    """`n` instructions of which about `dup_rate` are planted near-duplicates, and of the
    others about `siblings` share an opening and a third to a half of their body with an
    earlier one (similar, but not a copy: a drop of one is a false positive)."""
    rng = random.Random(seed)
    words = _vocabulary(rng, vocab)
    cum = list(itertools.accumulate(1.0 / (r + 1) ** 1.05 for r in range(len(words))))

    def draw() -> str:
        return rng.choices(words, cum_weights=cum)[0]

    n_dup = int(round(n * dup_rate))
    texts: list[str] = []
    cluster: list[int] = []
    bodies: list[tuple[str, list[str]]] = []
    for i in range(n - n_dup):
        length = rng.randint(*body)
        if bodies and rng.random() < siblings:
            # a hard negative: another instruction's opening and first part, a new rest
            opening, other = rng.choice(bodies)
            shared = other[: int(len(other) * rng.uniform(0.3, 0.5))]
            body_words = shared + rng.choices(words, cum_weights=cum, k=max(length - len(shared), 4))
        else:
            opening, body_words = rng.choice(OPENINGS), rng.choices(words, cum_weights=cum, k=length)
        bodies.append((opening, body_words))
        texts.append(f"{opening} {' '.join(body_words)}.")
        cluster.append(i)
    for _ in range(n_dup):
        origin = rng.randrange(n - n_dup)
        texts.append(_edit(rng, texts[origin], draw))
        cluster.append(origin)
    order = list(range(n))
    rng.shuffle(order)
    return Corpus([texts[i] for i in order], [cluster[i] for i in order])


def score(corpus: Corpus, kept_for: list[int | None]) -> dict[str, float | int]:
    """Precision and recall of drops: `kept_for[i]` is the index of the record that record i
    was dropped as a copy of (None: kept). A drop is right when both share a cluster."""
    drops = [(i, j) for i, j in enumerate(kept_for) if j is not None]
    right = sum(1 for i, j in drops if corpus.cluster[i] == corpus.cluster[j])
    expected = corpus.expected_drops()
    return {
        "dropped": len(drops),
        "expected_drops": expected,
        "true_positives": right,
        "precision": round(right / len(drops), 4) if drops else 1.0,
        "recall": round(right / expected, 4) if expected else 1.0,
    }
