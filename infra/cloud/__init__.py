"""The cloud controller (`controller`): starts and stops nodes through libcloud for member events
and reports back; the IaaS drivers it calls (`iaas`); the mock IaaS, a cloud of its own that the
libcloud `mock` driver reaches over HTTP (`mock`); `stratos cloud` (`cli`). See
docs/operators/cloud.md and docs/mock-iaas.md."""
