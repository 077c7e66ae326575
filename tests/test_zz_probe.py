import time
from tests.test_scaling_acceptance import short_loop_settings
from tests.test_cloud_controller import RunningCloud
from tests.conftest import RunningNode
from infra.health.app import HealthWorkerThread

def test_probe(settings, tmp_path):
    s = short_loop_settings(settings, tmp_path)
    node = RunningNode(s)
    cloud = RunningCloud(s)
    worker = HealthWorkerThread(s).start()
    time.sleep(3)
    for name, f in [("worker", worker.stop), ("controller", cloud.stop_controller), ("service", cloud.service.stop), ("node", node.stop)]:
        t=time.monotonic(); f(); print(name, round(time.monotonic()-t,2))
