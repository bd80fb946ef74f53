"""Hitless reload: a new proxy process takes the running one's sockets and channel state over.

The rule, whole (see docs/reload.md):

- ``acefleet-proxy reload`` asks the running proxy on ``handover_socket``; the running proxy
  spawns the new process itself (``sys.orig_argv``: an upgraded venv runs the new code) with one
  end of a socketpair (``ACEFLEET_HANDOVER_FD``).
- The new process builds everything but does not listen, and says hello. The old one then stops
  its event loop for the whole exchange (one synchronous stretch: nothing is read, accepted or
  written meanwhile), sends its state (versioned JSON, raw buffer bytes, file descriptors by
  SCM_RIGHTS) and waits for "taken". The new process commits ("taken") before it does any I/O
  on the passed sockets, so an answer other than "taken" leaves the old process intact: it
  resumes as if nothing happened.
- After "taken" the old process exits at once (``os._exit``): its copies of the sockets close
  without ``shutdown()``, bytes still in its user-space write buffers are never sent (the state
  says where each viewer resumes), and no engine session or claim is stopped or released.

Modules: ``framing.py`` (messages over the socketpair), ``state.py`` (the versioned format),
``giver.py`` (the old side), ``taker.py`` (the new side), ``notify.py`` (sd_notify),
``command.py`` (``acefleet-proxy reload``).
"""

HANDOVER_FD_ENV = "ACEFLEET_HANDOVER_FD"
# Tests and benchmarks only: the old process encodes this format number instead of the newest
# (1 = the previous encoder; an unknown number proves the refusal).
FORMAT_OVERRIDE_ENV = "ACEFLEET_HANDOVER_FORMAT"
