"""Getting data onto disk: ``bmvit prepare frames | ava | import-cvat`` (extraction, cuts, downloads, CVAT import)."""
