"""Central's HTTP routers, one per audience."""
