"""The slice cache: its manifest (the one contract between writer and readers), store layout and lifecycle."""
