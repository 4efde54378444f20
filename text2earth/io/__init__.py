"""I/O: images, single bands, atomic files, shards, PNG metadata, device and dtype choice."""
