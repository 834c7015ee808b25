"""Pure checks shared by several features (below the features, above core)."""
