"""The reliability and security suite (issue 8): faults survived, bad input refused, nothing
lost, nothing leaked. Each module covers one guarantee of RELIABILITY.md."""
