"""Cluster scenarios on one machine or many: replicas on nodes behind the router (data parallel), or one replica
split over nodes (engine.tensor_parallel).

`scenario` reads conf/cluster; `nodes` makes each node a network namespace on a host bridge; `run` starts a
server per node (or a torchrun rank per node) and the router over them; `bench` measures a scenario end to end;
`node_loss` kills a node under load and measures the failover; `fault_proxy` is the user-space link that delays
and resets requests (this kernel has no `sch_netem`).
"""
