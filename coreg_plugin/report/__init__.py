"""What people read about a run: the self-contained HTML report (:mod:`.html`)."""
