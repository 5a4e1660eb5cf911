"""A Ray worker node on 127.0.0.1 joining the cluster at argv[1], until it is killed.

`ray start` would listen on the machine's network address (Ray keeps 127.0.0.1 for
one-machine instances only); this starts the node as ray.cluster_utils.Cluster does.
"""

import sys
import time

from ray._private.node import Node
from ray._private.parameter import RayParams

params = RayParams(gcs_address=sys.argv[1], node_ip_address="127.0.0.1", num_cpus=1)
node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
time.sleep(1e9)
