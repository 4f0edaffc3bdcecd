"""Filter plugins: dedup (exact, MinHash, semantic), quality, PII, language, decontamination, license policy."""
