"""A local S3 server for tests: moto's server (PyPI `moto[server]`), on 127.0.0.1 and a free port.

Started by this code, stopped by its own PID; nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REGION = "us-east-1"
# Dummy credentials: moto accepts any; they only keep boto3 from looking for real ones.
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"


# Inherited settings that could point boto3 elsewhere (a profile, a role, a session) or carry real secrets.
UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN",
         "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
         "AWS_REGION", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


def aws_env(tmp: Path, endpoint_url: str) -> dict[str, str]:
    """Environment for processes that must reach no S3 but `endpoint_url`, and read nothing from ~/.aws."""
    no_proxy = ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY", "")]))
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp / "aws-config"),  # absent files: no profile, no credentials
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups for credentials or region
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
    }


class S3Server:
    """`python -m moto.server` on 127.0.0.1, port chosen by the OS (-p 0), its log in `workdir`."""

    def __init__(self, workdir: Path, name: str = "s3"):
        self.workdir = Path(workdir)
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, timeout: float = 30.0) -> "S3Server":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / f"{self.name}.log"
        with open(self.log, "wb") as out:  # a file, not a pipe: a full pipe would block the server
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        try:
            while self.url is None:
                self._check_alive(deadline)
                if m := re.search(r"Running on (http://127\.0\.0\.1:\d+)", self.log.read_text(errors="replace")):
                    self.url = m.group(1)
                else:
                    time.sleep(0.05)
            while not self._answers():
                self._check_alive(deadline)
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def _check_alive(self, deadline: float) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"moto server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"moto server did not answer in time:\n{self.log.read_text()[-3000:]}")

    def _answers(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to 127.0.0.1
        try:
            with opener.open(self.url + "/", timeout=2) as r:  # ListBuckets
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Terminate the server by its PID (kill it if it lingers)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- a client of this server only ---

    def client(self):
        """A boto3 client of this server (explicit endpoint and dummy keys; the caller's environment should
        come from `aws_env`, so that boto3 reads no ~/.aws files either)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                                     region_name=REGION).client(
            "s3", endpoint_url=self.url, config=Config(proxies={}, retries={"max_attempts": 2}))

    def create_bucket(self, bucket: str) -> None:
        if bucket not in self.buckets():
            self.client().create_bucket(Bucket=bucket)

    def buckets(self) -> list[str]:
        return [b["Name"] for b in self.client().list_buckets().get("Buckets", [])]

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def upload(self, files: dict[str, Path], bucket: str, prefix: str) -> None:
        """Each file to `prefix/<its relative path>` (the bucket is created if need be)."""
        self.create_bucket(bucket)
        s3 = self.client()
        for rel, path in files.items():
            s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{rel}")

    def download(self, bucket: str, prefix: str, dest: Path) -> Path:
        """Every object under `prefix/` into `dest`, at its key less the prefix; returns `dest`."""
        s3 = self.client()
        prefix = prefix.rstrip("/") + "/"
        for key in self.keys(bucket, prefix):
            path = Path(dest) / key[len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(path))
        return Path(dest)


def storage_env(server: S3Server) -> dict[str, str]:
    """Snakemake's S3 storage settings, as environment variables only (jobs on SLURM see no CLI flags)."""
    return {"SNAKEMAKE_STORAGE_S3_ENDPOINT_URL": server.url,
            "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": ACCESS_KEY,
            "SNAKEMAKE_STORAGE_S3_SECRET_KEY": SECRET_KEY,
            "SNAKEMAKE_STORAGE_S3_REGION": REGION}
