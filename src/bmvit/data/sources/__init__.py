"""Frame sources: ``(video, frame numbers) -> (T, h, w, 3) uint8`` from frame folders or video files."""
