"""Recording: chunk store, file creator, notifications (docs/recording.md)."""
