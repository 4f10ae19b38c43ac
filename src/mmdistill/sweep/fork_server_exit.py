"""Imported only by the sweep's fork server (the last of :data:`.fork_server.WORKER_IMPORTS`): when the sweep stops
the server, it ends at once (``os._exit``) rather than unloading torch and the training code, about 1 s. The server
writes no files and holds nothing to flush; its workers end by ``os._exit`` already."""

from __future__ import annotations

import atexit
import os

atexit.register(os._exit, 0)
