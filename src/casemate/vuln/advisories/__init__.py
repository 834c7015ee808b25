"""Advisory data, offline: sources that parse the files users bring, and the local index."""
