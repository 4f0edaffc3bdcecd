"""The `openai` teacher's options, apart from the teacher so that each stays readable."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from distill.teacher import SamplingOptions
from distill_plugins.teachers._api_batch import BatchOptions

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OpenAIOptions(SamplingOptions, BatchOptions):
    """The `openai` teacher's options: the server, its limits and prices, and batch mode."""

    model: str = Field(description="Model id as the server names it.")
    base_url: str | None = Field(None, description="API root, e.g. http://127.0.0.1:8000/v1; default: OpenAI's.")
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="NAME of the environment variable that "
        "holds the key (never the key itself). May be unset for a local base_url.",
    )
    license: str | None = Field(
        None,
        description="SPDX or LicenseRef of the model's terms. Default: "
        "LicenseRef-OpenAI-Terms for OpenAI, else LicenseRef-Unspecified.",
    )
    revision: str | None = Field(None, description="Model snapshot, recorded in provenance.")
    concurrency: int = Field(8, ge=1, description="Requests in progress at once (retries keep their slot).")
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(
        None,
        gt=0,
        description="Estimated from prompt length and max_tokens, corrected with the usage the server reports.",
    )
    max_retries: int = Field(6, ge=0, description="Retries per request after the first attempt.")
    timeout: float = Field(60.0, gt=0, description="Seconds per attempt.")
    backoff_base: float = Field(0.5, gt=0, description="First back-off bound in seconds (full jitter).")
    backoff_max: float = Field(30.0, gt=0)
    circuit_breaker: int = Field(
        20, ge=1, description="Give up after this many consecutive requests failed all their retries."
    )
    max_total_tokens: int | None = Field(
        None, ge=1, description="Stop once this many tokens (prompt + completion) were spent, across resumes."
    )
    max_cost_usd: float | None = Field(
        None, gt=0, description="Stop once this much was spent, across resumes; needs the prices."
    )
    price_per_1k_prompt: float | None = Field(None, ge=0)
    price_per_1k_completion: float | None = Field(None, ge=0)
    logprobs: bool = Field(False, description="Ask for each generated token's log-probability.")
    use_response_format: bool = Field(
        True, description="Send a request's response_format; dropped automatically if the server rejects it."
    )

    @field_validator("api_key_env")
    @classmethod
    def _is_a_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            # Never echo the value: the likeliest mistake is pasting the key itself here.
            raise ValueError("must be the NAME of an environment variable (letters, digits, _), not the key itself")
        return value

    @model_validator(mode="after")
    def _prices_for_cost(self) -> OpenAIOptions:
        if self.max_cost_usd is not None and (self.price_per_1k_prompt is None or self.price_per_1k_completion is None):
            raise ValueError("max_cost_usd needs price_per_1k_prompt and price_per_1k_completion")
        return self
