"""Stages on a Ray cluster (`executor: ray`): the only place distill imports `ray`."""
