"""What a run reads and writes: seeds in, durable stage shards, stage input read back, exports, progress."""
