"""Migration rehearsal: pending revisions on a big throwaway copy, under load (docs/rehearse.md)."""
