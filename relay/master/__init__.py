"""The master: the only unjailed code (listener, token registry, admission, spawning, reaping).

May import: `jail`, `relay.control`, `relay.log`, the standard library. Never anything that
parses client bytes (`relay.conn`, `relay.tmate`, `relay.screen`, `relay.input`, paramiko).
"""
