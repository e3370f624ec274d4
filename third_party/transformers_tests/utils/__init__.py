"""Our stand-in for a module the transformers sdist does not ship; see ../README.md."""
