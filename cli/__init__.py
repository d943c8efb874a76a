"""invoke task modules; the root tasks.py composes them into one flat collection."""
