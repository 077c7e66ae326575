"""The IaaS drivers the cloud controller calls: the mapping from a cartridge's iaasProvider entry
to libcloud driver calls (`providers.py`), containers (Kubernetes, Docker) behind the same
libcloud calls (`containers.py`), and the libcloud `mock` driver that reaches the mock IaaS
(infra/cloud/mock/) over HTTP (`mock_driver.py`)."""
