"""The public client classes, one module each."""
