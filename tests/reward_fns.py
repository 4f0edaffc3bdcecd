"""Reward functions named in test configs as `reward_fns:<name>`."""


def prefers_short(prompt, response, penalty=1.0):
    return -penalty * len(response)


def acme_rubric(prompt, response):
    return 1.0 if response.startswith("Acme Support:") else 0.0


def tagged_rubric(prompt, response, tags):
    """Passes an answer only on an on-topic question: checks the item's tags reach the rubric."""
    return 1.0 if response.startswith("Answer") and tags.get("topic") == "on" else 0.0


def broken_rubric(prompt, response):
    raise ValueError("rubric bug")


def off_topic(prompt):
    """A rule-answer classifier: a question without a networking word."""
    question = prompt[-1]["content"].lower()
    return not any(w in question for w in ("router", "wi-fi", "network", "ghz"))


def off_topic_by_field(prompt, fields):
    return fields.get("topic") == "off"


def not_a_bool(prompt):
    return "yes"
