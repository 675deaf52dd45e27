"""Sans-IO tmate: the wire codec, the typed messages, and the session model they update.

May import: `relay.tmux`, `relay.screen.terminal` (a pane's screen model), msgpack; no sockets,
select, threads or paramiko.
"""
