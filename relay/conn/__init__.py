"""The jailed connection process: SSH transport, the host role (the session process), the ssh
viewer role, the session-viewer link, and the warm-up that runs this code before the first fork.

May import: every sans-IO package (`relay.tmate`, `relay.screen`, `relay.input`, `relay.tmux`),
`relay.control`, `relay.log`, `relay.hostkeys`, `jail.set_process_title`; never `relay.master.server`.
"""
