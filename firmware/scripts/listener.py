#!/usr/bin/env python3
"""Host side of the firmware end-to-end test (until varta-watch takes over).

Binds 127.0.0.1 on an ephemeral port, writes the port to PORT_FILE, then receives until it has
COUNT datagrams of the expected kind and checks each one:

  text       "varta-probe I/COUNT" for I in 1..=COUNT, each exactly once
  vlp-plain  VLP v0.2 plain frames (32 bytes): magic, version, CRC-32C, status Ok, the given
             pid, nonces 1..=COUNT in order, timestamps never decreasing and not u64::MAX

Exits 0 when all arrived and passed, 1 on the first bad datagram or at the timeout.
"""
import argparse
import os
import socket
import struct
import sys
import time


def crc32c(data: bytes) -> int:
    # Reflected Castagnoli polynomial, init and final xor 0xFFFFFFFF (VLP v0.2 §1).
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"") == 0 and crc32c(b"a") == 0xC1D04330 and crc32c(b"123456789") == 0xE3069283


class Text:
    def __init__(self, count):
        self.expected = {f"varta-probe {i}/{count}".encode() for i in range(1, count + 1)}
        self.seen = set()

    def check(self, data):
        if data not in self.expected:
            return f"unexpected datagram {data!r}"
        if data in self.seen:
            return f"duplicate datagram {data!r}"
        self.seen.add(data)
        return None

    def done(self):
        return self.seen == self.expected


class VlpPlain:
    def __init__(self, count, pid):
        self.count, self.pid = count, pid
        self.next_nonce, self.last_ts = 1, 0

    def check(self, data):
        if len(data) != 32:
            return f"{len(data)} bytes, a plain frame has 32"
        if data[0:2] != b"VA":
            return f"bad magic {data[0:2].hex()}"
        if data[2] != 2:
            return f"bad version {data[2]}"
        (stored,) = struct.unpack_from("<I", data, 28)
        if stored != crc32c(data[:28]):
            return f"bad CRC: stored {stored:#010x}, computed {crc32c(data[:28]):#010x}"
        status = data[3]
        pid, ts, nonce, payload = struct.unpack_from("<IQQI", data, 4)
        print(f"listener:   status {status} pid {pid} timestamp {ts} ns nonce {nonce} payload {payload}")
        if status != 0:
            return f"status {status}, expected 0 (Ok)"
        if pid != self.pid:
            return f"pid {pid}, expected {self.pid}"
        if nonce != self.next_nonce:
            return f"nonce {nonce}, expected {self.next_nonce}"
        if ts == 2**64 - 1 or ts < self.last_ts:
            return f"timestamp {ts} reserved or decreasing (last {self.last_ts})"
        self.next_nonce, self.last_ts = nonce + 1, ts
        return None

    def done(self):
        return self.next_nonce == self.count + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port_file")
    ap.add_argument("kind", choices=["text", "vlp-plain"])
    ap.add_argument("count", type=int)
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    checker = Text(args.count) if args.kind == "text" else VlpPlain(args.count, args.pid)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(sock.getsockname()[1]))
    os.rename(args.port_file + ".tmp", args.port_file)

    deadline = time.monotonic() + args.timeout
    received = 0
    while not checker.done():
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"listener: timeout after {received}/{args.count} datagrams")
            return 1
        sock.settimeout(left)
        try:
            data, peer = sock.recvfrom(2048)
        except socket.timeout:
            continue
        received += 1
        print(f"listener: {len(data)} bytes from {peer[0]}:{peer[1]}")
        problem = checker.check(data)
        if problem:
            print(f"listener: REJECTED: {problem}")
            return 1
    print(f"listener: all {args.count} {args.kind} datagrams arrived and passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
