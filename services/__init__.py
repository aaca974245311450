"""The Cairn services and the runtime they share."""
