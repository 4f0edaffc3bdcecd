"""The Acme Support rubric, as a reward function: it ranks the teacher's candidate answers and
scores every model on the held-out set (the same function in both places).

- A question about routers, Wi-Fi or home networking gets an answer that begins with
  `Acme Support:`, says something, stays short and ends its last sentence.
- Any other question gets exactly the redirect sentence.

Held-out items say which kind they are (`topic: on|off`); generated questions are told apart
by their words (`on_topic`), and `off_topic` is the classifier `synthetic.yaml` names.
"""

from __future__ import annotations

import re

PREFIX = "Acme Support:"
REDIRECT = "Acme Support: Let's keep the discussion relevant to your Acme router."
MAX_WORDS = 50

_TOPIC = re.compile(
    r"\b(router|routers|wi-?fi|wifi|wireless|network|networks|networking|internet|modem|ssid|ethernet|lan|wan|"
    r"ip|ipv6|dns|dhcp|vpn|firmware|bandwidth|broadband|mesh|extender|hotspot|signal|connection|connect|"
    r"connected|disconnect|port|ports|wps|wpa[23]?|password|acme|ghz|bluetooth|streaming|latency|ping|"
    r"speed|online|offline|devices?|parental|guest|channel|printer|admin)\b",
    re.I,
)


def on_topic(question: str) -> bool:
    return _TOPIC.search(question) is not None


def score(prompt: list[dict], response: str, tags: dict | None = None) -> float:
    question = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    topic = (tags or {}).get("topic") or ("on" if on_topic(question) else "off")
    text = response.strip()
    if topic == "off":
        return 1.0 if text == REDIRECT else 0.0
    if text == REDIRECT or not text.startswith(PREFIX):
        return 0.0
    body = text[len(PREFIX) :].strip()
    if len(body.split()) < 3 or len(text.split()) > MAX_WORDS or body[-1] not in ".!?)":
        return 0.0
    return 1.0


def concise(prompt: list[dict], response: str, tags: dict | None = None) -> float:
    """The ranker of `synthetic.yaml`: the rubric, with the shorter of two passing answers ranked
    higher (a passing answer scores in (1, 2), a failing one 0), so `min_score: 1.0` still keeps
    only passing answers. A student copies the length of what it trains on; answers near the
    limit come out cut off when it answers greedily."""
    passed = score(prompt, response, tags)
    return passed * (1.0 + 1.0 / (1.0 + len(response.split())))


def off_topic(prompt: list[dict]) -> bool:
    """The classifier of `synthetic.yaml`'s rule-answer filter: a question with none of the task's
    words is off-topic and gets the redirect, written by the rule rather than by the teacher."""
    question = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    return not on_topic(question)
