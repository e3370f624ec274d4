"""transformers' common model tests, fetched from the sdist of the installed version; see README.md."""
