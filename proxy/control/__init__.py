"""The proxy's side of the control plane (fleet mode): one client per peer (``peer.py``), the
event queue to central (``event_queue.py``), the live-stream snapshot (``snapshot.py``), and the
wiring of those with the placement chain (``links.py``)."""
