"""Log formats: human lines by default, one JSON object per line for log pipelines."""

from __future__ import annotations

import json
import logging
import time

# Fields the code passes with `extra=` that belong in the JSON record.
FIELDS = ("mac", "identity", "nas", "port", "segment", "vlan", "reasons", "remediation",
          "source", "method", "correlation_id", "job", "switch")


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.worker is not None:
            out["worker"] = self.worker
        for k in FIELDS:
            v = record.__dict__.get(k)
            if v is not None:
                out[k] = list(v) if isinstance(v, tuple) else v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)
