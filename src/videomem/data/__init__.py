"""Data layer: video encode/decode, synthetic long-video QA, WebDataset shards, the LightningDataModule."""
