"""The jailed connection process: `process` (its entry point, handed to the master by relay.cli),
`ssh` (the paramiko server policy), `host` (the host role: the session process), `viewer` (the
ssh viewer connection), `link` (the session-viewer link), and `warmup`, which runs this code in
the master before the first fork. It talks to the master only through relay.control.Client.

May import: every sans-IO package (`relay.tmate`, `relay.screen`, `relay.input`, `relay.tmux`),
`relay.control`, `relay.log`, `relay.hostkeys`, `jail.set_process_title`; never `relay.master.server`.
"""
