"""One module per ``hf-token-prune`` command: each parses its flags and calls the library."""
