"""Sans-IO screens: the pane terminal model and the frames a viewer's screen is drawn from.

May import: `relay.tmux`, `relay.tmate` (the session model it draws), pyghostty; no sockets,
select, threads or paramiko.
"""
