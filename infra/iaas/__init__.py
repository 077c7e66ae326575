"""IaaS adapters: the mock IaaS (a libcloud NodeDriver), its simulated agents and health
patterns, and the mapping from a cartridge's iaasProvider entry to libcloud driver calls."""
