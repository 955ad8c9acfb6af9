"""vibration-edge training job: from parquet windows to a published, validated model."""
