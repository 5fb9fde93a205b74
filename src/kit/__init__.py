"""The resource kit: what every resource uses (pages, ETag responses, errors, the cache,
its NOTIFY triggers). It names no resource: each one's words live in its own package."""
