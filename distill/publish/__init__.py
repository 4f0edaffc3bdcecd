"""Publishing a release, only behind its license audit (`distill push`)."""
