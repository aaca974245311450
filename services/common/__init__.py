"""The runtime every Cairn service shares: config, database, logging, errors, serving."""
