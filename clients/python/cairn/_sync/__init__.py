"""The machinery under `cairn.sync`: a private loop on a thread, and sync views of async objects."""
