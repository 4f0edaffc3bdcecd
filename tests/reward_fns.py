"""Reward functions named in test configs as `reward_fns:<name>`."""


def prefers_short(prompt, response, penalty=1.0):
    return -penalty * len(response)


def acme_rubric(prompt, response):
    return 1.0 if response.startswith("Acme Support:") else 0.0
