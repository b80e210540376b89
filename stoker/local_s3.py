"""A local S3 server for tests and benchmarks: ``moto_server`` (``pip install "moto[server]"``) on 127.0.0.1.

:class:`LocalS3` starts it on a free port, creates a bucket and gives the variables a stoker
process needs to reach it (``S3_ENDPOINT``, ``S3_USE_HTTPS=0``, ``S3_VERIFY_SSL=0`` and a
throw-away key pair: moto accepts any). :class:`S3Object` reads and writes objects with boto3,
so the process that checks a run (a test) never loads tensorflow-io's S3 filesystem itself.
It offers what the test helpers use of a ``Path`` (``/``, ``exists``, ``read_text``, ...).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from typing import Any

from stoker import ports, processes
from stoker.errors import StokerError

REGION = "us-east-1"


def _server_command(port: int) -> list[str]:
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
    if exe is None:
        raise StokerError('moto_server is not installed: pip install "moto[server]" (the test extra of setup.py)')
    return [exe, "-H", "127.0.0.1", "-p", str(port)]


class LocalS3:
    """``with LocalS3("bucket") as s3:`` a moto server on 127.0.0.1 holding an empty ``bucket``."""

    def __init__(self, bucket: str = "stoker-test", *, start_timeout_s: float = 30.0) -> None:
        self.bucket, self.start_timeout_s = bucket, start_timeout_s
        self.port = 0
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Variables for a process that reads or writes ``s3://`` on this server."""
        return {
            "S3_ENDPOINT": self.endpoint,
            "S3_USE_HTTPS": "0",
            "S3_VERIFY_SSL": "0",
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "local-test",  # moto takes any pair; nothing real is ever used here
            "AWS_SECRET_ACCESS_KEY": "local-test",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}".rstrip("/")

    def client(self) -> Any:
        import boto3

        e = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"],
        )

    def object(self, key: str) -> S3Object:
        return S3Object(self.client(), self.bucket, key)

    def __enter__(self) -> LocalS3:
        self.port = ports.free_ports(1)[0]
        self._proc = processes.spawn(_server_command(self.port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise StokerError(f"moto_server did not start on {self.endpoint}") from None
                time.sleep(0.2)
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def __exit__(self, *_: Any) -> None:
        if self._proc is not None:
            processes.stop([self._proc], grace_s=5.0)
            self._proc = None


class S3Object:
    """An object (or prefix) in a bucket, read with boto3; ``str()`` is its ``s3://`` URL."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self.client, self.bucket, self.key = client, bucket, key.strip("/")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def __truediv__(self, part: str) -> S3Object:
        return S3Object(self.client, self.bucket, f"{self.key}/{part}")

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def listing(self) -> list[str]:
        """Keys under this prefix (sorted)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key + "/")
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def exists(self) -> bool:
        found = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key, MaxKeys=1).get("Contents", [])
        return bool(found) and found[0]["Key"] == self.key

    def read_bytes(self) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_text(self, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key, Body=text.encode("utf-8"))
