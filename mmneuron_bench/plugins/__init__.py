"""The plugin core: hook specifications and the registry that loads plugins."""
