"""IaaS adapters: the mock IaaS as a cloud of its own (its durable cloud `mock.py`, its HTTP API
`api.py`, the service `stratos mock-iaas` runs `service.py`, its simulated agents and health
patterns, its process mode), the libcloud `mock` driver that reaches it over HTTP (`driver.py`),
and the mapping from a cartridge's iaasProvider entry to libcloud driver calls (`providers.py`)."""
