"""Read an offline wandb run file (``run-*.wandb``) without a server, for tests.

The file is a 7-byte header followed by LevelDB-log framed records (32 KiB blocks; each chunk
has a 7-byte header: crc32, length, type FULL/FIRST/MIDDLE/LAST), each a wandb ``Record`` proto.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

_HEADER = 7
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes):
    offset, pending = _HEADER, b""
    while offset + 7 <= len(data):
        left_in_block = _BLOCK - (offset % _BLOCK)
        if left_in_block < 7:
            offset += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        chunk = data[offset + 7: offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def read_offline_run(path: Path) -> dict:
    """Config, summary, history keys and the run's group / job_type / name, from an offline run file."""
    config, summary, history_keys, run = {}, {}, set(), {}
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = {"group": record.run.run_group, "job_type": record.run.job_type, "name": record.run.display_name}
            for item in record.run.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                key = "/".join(item.nested_key) if item.nested_key else item.key
                summary[key] = json.loads(item.value_json)
        elif kind == "history":
            history_keys.update("/".join(item.nested_key) if item.nested_key else item.key
                                for item in record.history.item)
    return {"config": config, "summary": summary, "history_keys": history_keys, **run}
