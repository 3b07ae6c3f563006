"""The network room: key managers, QKD links, routing, and the relay that fills remote slices.
Built on the key node's messages and its KeySupply port; knows nothing of HTTP or scenarios."""
