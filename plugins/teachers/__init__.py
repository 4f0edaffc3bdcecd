"""Teacher plugins: any OpenAI-compatible API, vLLM in process, transformers in process."""
