"""The server room: an LKM's HTTP surface (aiohttp routes, errors, identity), its metrics and
logs, TLS certificates, and serving a node on a real port."""
