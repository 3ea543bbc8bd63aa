"""File formats: bytes on disk <-> checked records (AVA CSVs and label maps, ACT pickles, CVAT XML); no pixels."""
