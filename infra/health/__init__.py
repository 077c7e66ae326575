"""The health worker (faust adapter): topics, agents and cluster views over the pure rules of ``streams``."""

HEALTH_GROUP = "health-windows"
"""Consumer group (with the topic prefix) of the workers sharing the health partitions: their
aiokafka reader of health records (``infra.health.agents``), not faust's own consumer."""
