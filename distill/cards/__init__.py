"""Cards that carry a release's licenses and its audit: dataset cards, NOTICE, Croissant, model cards."""

from distill.cards.dataset import (
    ProvenanceSummary,
    croissant,
    dataset_card,
    hf_license_fields,
    notice,
    summarize,
    write_dataset_cards,
)

__all__ = [
    "ProvenanceSummary",
    "summarize",
    "hf_license_fields",
    "dataset_card",
    "notice",
    "croissant",
    "write_dataset_cards",
]
