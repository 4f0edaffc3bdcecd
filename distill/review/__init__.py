"""People in the loop: `distill review` serves a page over a stage's records where a person
ranks, chooses, accepts, rejects, edits and flags; a `review` stage turns those decisions into
records that later stages read like any other, with the reviewer in provenance."""
