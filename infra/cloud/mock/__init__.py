"""The mock IaaS as a cloud of its own: its durable cloud (`cloud`), its account, i.e. where it
answers and its access key (`account`), its HTTP API (`api`), the service `stratos mock-iaas`
runs (`service`, `cli`), its instances as simulated agents with health patterns (`simulator`,
`patterns`) or as real `stratos agent` processes (`processes`). See docs/mock-iaas.md."""
