"""Run any backend in a supervised worker process (`isolation = "process"`)."""

from backends.worker.policy import ISOLATIONS, WorkerOptions
from backends.worker.process import ProcessBackend

__all__ = ["ISOLATIONS", "ProcessBackend", "WorkerOptions"]
