"""The daemon's stop signal: set while the daemon stops, so that each long job finishes its current step,
records where it stopped and returns."""

from __future__ import annotations

import threading

stopping = threading.Event()
