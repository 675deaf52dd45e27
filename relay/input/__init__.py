"""Sans-IO viewer input: terminal bytes to tmux key codes, key tables and dispatch, prompts.

May import: `relay.tmux`, `relay.tmate`, `relay.screen` (display widths); no sockets, select,
threads or paramiko.
"""
