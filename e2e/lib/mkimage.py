#!/usr/bin/env python3
"""Builds a one-layer container image without a registry or a Docker engine.

    mkimage.py --name REF --out image.tar [--entrypoint JSON] [--cmd JSON]
               [--user UID:GID] [--env K=V ...] [--bin SRC[:DEST] ...]
               [--busybox] [--dir PATH ...] [--copy SRC:DEST ...]

Each --bin is an ELF file copied with every shared library `ldd` names (and
the dynamic loader), so a Debian binary runs as it does on the host. The
image has /etc/passwd and /etc/group with a `redis` user (999, the official Redis image's) and a `push` user (10001) and a
world-writable /tmp. The output is a docker-archive tarball for
`ctr -n k8s.io images import`. Files get mtime 0 and a sorted order: the same
inputs give the same image digest, so re-importing is a no-op.
"""

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def shared_libs(path):
    """Absolute paths of the libraries (and loader) an ELF file needs."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True)
    if out.returncode != 0 or "not a dynamic executable" in out.stdout + out.stderr:
        return []
    return [m.group(1) for m in map(LDD_LINE.search, out.stdout.splitlines()) if m]


class Layer:
    def __init__(self):
        self.files = {}  # dest -> (kind, payload, mode)

    def add_dir(self, dest, mode=0o755):
        parts = dest.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.files:
                self.files[d] = ("dir", None, mode)

    def add_file(self, dest, data, mode):
        dest = dest.strip("/")
        self.add_dir(os.path.dirname(dest))
        self.files[dest] = ("file", data, mode)

    def add_link(self, dest, target):
        dest = dest.strip("/")
        self.add_dir(os.path.dirname(dest))
        self.files[dest] = ("link", target, 0o777)

    def add_host_file(self, src, dest, strip=False):
        real = os.path.realpath(src)
        with open(real, "rb") as f:
            data = f.read()
        if strip:
            data = strip_bytes(data)
        self.add_file(dest, data, os.stat(real).st_mode & 0o7777)

    def tar_bytes(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for dest in sorted(self.files):
                kind, payload, mode = self.files[dest]
                info = tarfile.TarInfo(dest)
                info.mtime = 0
                info.mode = mode
                info.uid = info.gid = 0
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "link":
                    info.type = tarfile.SYMTYPE
                    info.linkname = payload
                    tar.addfile(info)
                else:
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        return buf.getvalue()


def strip_bytes(data):
    """`strip` a copy: the image carries no debug info (the target dir keeps it)."""
    import tempfile

    with tempfile.NamedTemporaryFile(delete=False) as tmp:
        tmp.write(data)
    try:
        subprocess.run(["strip", "--strip-unneeded", tmp.name], check=True)
        with open(tmp.name, "rb") as f:
            return f.read()
    finally:
        os.unlink(tmp.name)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--entrypoint", default="null")
    p.add_argument("--cmd", default="null")
    p.add_argument("--user", default="10001:10001")
    p.add_argument("--workdir", default="/")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--bin", action="append", default=[])
    p.add_argument("--strip", action="store_true", help="strip each --bin")
    p.add_argument("--busybox", action="store_true", help="busybox-static as /bin/sh and its applets")
    p.add_argument("--dir", action="append", default=[])
    p.add_argument("--copy", action="append", default=[])
    p.add_argument("--link", action="append", default=[], help="DEST:TARGET symlink")
    a = p.parse_args()

    layer = Layer()
    layer.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nredis:x:999:999:redis:/data:/bin/sh\npush:x:10001:10001:push:/home/push:/bin/sh\n", 0o644)
    layer.add_file("etc/group", b"root:x:0:\nredis:x:999:\npush:x:10001:\n", 0o644)
    layer.add_file("etc/nsswitch.conf", b"hosts: files dns\n", 0o644)
    layer.add_dir("tmp", 0o1777)
    layer.add_dir("home/push", 0o777)
    for d in a.dir:
        layer.add_dir(d, 0o777)
    libs = set()
    for spec in a.bin:
        src, _, dest = spec.partition(":")
        layer.add_host_file(src, dest or src, strip=a.strip)
        libs.update(shared_libs(src))
    if a.busybox:
        layer.add_host_file("/bin/busybox", "bin/busybox")
        applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True)
        for name in applets.stdout.split():
            if "bin/" + name not in layer.files:
                layer.add_link("bin/" + name, "busybox")
    for lib in sorted(libs):
        layer.add_host_file(lib, lib)
    for spec in a.copy:
        src, _, dest = spec.partition(":")
        layer.add_host_file(src, dest)
    for spec in a.link:
        dest, _, target = spec.partition(":")
        layer.add_link(dest, target)

    tar = layer.tar_bytes()
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": json.loads(a.entrypoint),
            "Cmd": json.loads(a.cmd),
            "User": a.user,
            "WorkingDir": a.workdir,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"] + a.env,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "e2e/lib/mkimage.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    # "{digest}" in the name stands for the layer's digest: a tag that changes
    # exactly when the content does.
    name = a.name.replace("{digest}", diff_id[7:19])
    manifest = [{"Config": config_name, "RepoTags": [name], "Layers": ["layer.tar"]}]
    out = Layer()
    out.add_file("layer.tar", tar, 0o644)
    out.add_file(config_name, config_bytes, 0o644)
    out.add_file("manifest.json", json.dumps(manifest).encode(), 0o644)
    with open(a.out, "wb") as f:
        f.write(out.tar_bytes())
    print(name)


if __name__ == "__main__":
    sys.exit(main())
