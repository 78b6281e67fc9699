from heartbeat.cli import entry

entry()
