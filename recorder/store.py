"""Where chunks, manifests and finished files live: one small interface, two implementations.

The tap (on a media node), signaling and the file creator may run in different processes or pods;
they share nothing but this store, so every piece of recording state is an object in it. A store
is named by a URL so it can travel in a control-API request: ``file:///abs/dir`` (the embedded
default) or ``s3://bucket/prefix`` (deployments; endpoint and keys from ``PARLEY_S3_*``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse


class Store(Protocol):
    url: str

    def put(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get(self, key: str) -> bytes: ...
    def get_file(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> list[str]: ...
    def local_path(self, key: str) -> Path | None: ...


class LocalStore:
    """A directory; writes go to a temporary name then ``rename`` so a reader (or a crash) never
    sees half an object - the same all-or-nothing a PUT gives on S3."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise KeyError(key)
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(dest)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise KeyError(key) from exc

    def get_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the object; an absent one is not an error (as on S3)."""
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root
        if not base.is_dir():
            return []
        keys = (str(p.relative_to(self.root)) for p in base.rglob("*")
                if p.is_file() and not p.name.startswith("."))
        return sorted(k for k in keys if k.startswith(prefix))

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


class S3Store:
    """An S3-compatible bucket through boto3 (path-style addressing: works with MinIO,
    versitygw, SeaweedFS and AWS alike)."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None,
                 region: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
            aws_secret_access_key=secret_key, region_name=region or "us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                          connect_timeout=5, read_timeout=30))

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def put_file(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self.prefix + key)

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise KeyError(key) from exc

    def get_file(self, key: str, path: Path) -> None:
        self.client.download_file(self.bucket, self.prefix + key, str(path))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            return True
        except ClientError:
            return False

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix):
            keys.extend(o["Key"][len(self.prefix):] for o in page.get("Contents", []))
        return sorted(keys)

    def local_path(self, key: str) -> Path | None:
        return None


def open_store(url: str) -> LocalStore | S3Store:
    """The store named by ``url``; S3 credentials come from ``PARLEY_S3_ENDPOINT``,
    ``PARLEY_S3_ACCESS_KEY``, ``PARLEY_S3_SECRET_KEY``, ``PARLEY_S3_REGION``."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        env = os.environ.get
        store = S3Store(parsed.netloc, parsed.path, endpoint=env("PARLEY_S3_ENDPOINT"),
                        access_key=env("PARLEY_S3_ACCESS_KEY"),
                        secret_key=env("PARLEY_S3_SECRET_KEY"), region=env("PARLEY_S3_REGION"))
        return store
    if parsed.scheme in ("file", ""):
        return LocalStore(Path(parsed.path if parsed.scheme else url))
    raise ValueError(f"unsupported store URL {url!r} (file:// or s3://)")


def default_store_url(data_dir: Path) -> str:
    """``PARLEY_RECORDING_STORE`` or ``<data_dir>/recordings``."""
    return os.environ.get("PARLEY_RECORDING_STORE") or (data_dir / "recordings").resolve().as_uri()
