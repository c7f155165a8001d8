#!/usr/bin/env python3
"""Start a QEMU guest on bhyve-slirp-helper, as a hypervisor that starts the helper itself:
make a SOCK_DGRAM socketpair, send bhyve's configuration nvlist on QEMU's end, start the helper
on the other end (-S, --exit-with-parent), then become QEMU (exec: same pid) with its end in
place of @FD@ in the arguments. QEMU is then the helper's parent; the helper's pid goes to
--pidfile.

  qemu_launch.py --helper PATH --pidfile FILE [--open] [--mtui N] [--helper-arg ARG]...
                 -- qemu-system-x86_64 ... -netdev socket,id=n0,fd=@FD@ ...

The nvlist is libnv's little-endian wire format (see the project's docs: a 19-byte header,
then pairs of a 19-byte header, the NUL-terminated name and the data)."""
import argparse
import os
import socket
import struct
import subprocess
import sys


def nvlist(pairs):
    body = b""
    for name, value in pairs:
        key = name.encode() + b"\0"
        if isinstance(value, int):
            kind, data = 3, struct.pack("<Q", value)  # NUMBER
        else:
            kind, data = 4, value.encode() + b"\0"  # STRING
        body += struct.pack("<BHQQ", kind, len(key), len(data), 0) + key + data
    return struct.pack("<BBBQQ", 0x6C, 0, 0, 0, len(body)) + body


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--helper", required=True)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--open", action="store_true")
    p.add_argument("--mtui", type=int)
    p.add_argument("--helper-arg", action="append", default=[])
    p.add_argument("qemu", nargs=argparse.REMAINDER)
    a = p.parse_args()
    qemu = a.qemu[1:] if a.qemu[:1] == ["--"] else a.qemu
    if not qemu:
        sys.exit("qemu_launch.py: no QEMU command")
    pairs = [("device", "virtio-net"), ("backend", "slirp")]
    if a.open:
        pairs.append(("open", "true"))
    if a.mtui:
        pairs.append(("mtui", a.mtui))
    pairs.append(("vmname", "perf"))
    qemu_end, helper_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    qemu_end.send(nvlist(pairs))
    helper = subprocess.Popen(
        [a.helper, "-S", str(helper_end.fileno()), "--exit-with-parent", *a.helper_arg],
        pass_fds=[helper_end.fileno()],
        stdin=subprocess.DEVNULL,
    )
    helper_end.close()
    with open(a.pidfile, "w") as f:
        f.write(f"{helper.pid}\n")
    os.set_inheritable(qemu_end.fileno(), True)
    args = [w.replace("@FD@", str(qemu_end.fileno())) for w in qemu]
    os.execvp(args[0], args)


main()
