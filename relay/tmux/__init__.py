"""Sans-IO tmux semantics shared by the session model, the screen and the input: command-line
and flag parsing, formats, options. May import only the standard library."""
