"""The answer shape of `config.yaml`: a short answer and how many steps it takes."""

from pydantic import BaseModel, Field


class Fix(BaseModel):
    answer: str = Field(min_length=1, max_length=400)
    steps: int = Field(ge=1, le=20)
