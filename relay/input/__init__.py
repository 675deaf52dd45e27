"""Sans-IO viewer input: terminal bytes to tmux key codes, key tables and dispatch, prompts.

  keycodes   tmux 2.4's key codes (the host's encoding) and key names
  ttymodes   an ssh viewer's pty-req terminal modes (its erase character)
  parser     InputParser: a viewer terminal's bytes -> key codes; escape-time
  commands   the command table: canonical names, aliases, local and read-only commands
  dispatch   KeyDispatcher: key tables, prefix, repeat, read-only -> what to do
  encode     keys and commands as messages for the host's protocol version
  prompt     status-line prompts (command-prompt, confirm-before)

May import: `relay.tmux`, `relay.tmate`, `relay.screen` (display widths); no sockets, select,
threads or paramiko.
"""
