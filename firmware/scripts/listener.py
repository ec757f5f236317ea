#!/usr/bin/env python3
"""Host side of the firmware end-to-end test (until varta-watch takes over).

Binds 127.0.0.1 on an ephemeral port, writes the port to PORT_FILE, then receives until it has
COUNT datagrams of the expected kind and checks each one:

  text       "varta-probe I/COUNT" for I in 1..=COUNT, each exactly once
  vlp-plain  VLP v0.2 plain frames (32 bytes): magic, version, CRC-32C, status Ok, the given
             pid, nonces 1..=COUNT in order, timestamps never decreasing and not u64::MAX

  vlp-master VLP v0.2 master-key datagrams (64 bytes): the clear pid is the given one, the
             tag verifies under the agent key HKDF-derived from --key and the pid, the IV
             prefix is the one HKDF-derived from --salt, counters 1..=COUNT in order, and the
             opened frame passes the vlp-plain checks with the same pid

With --silence S, after the last expected datagram the listener keeps listening S seconds and
rejects anything that arrives (a device told to go quiet must stay quiet).

Exits 0 when all arrived and passed, 1 on the first bad datagram or at the timeout.
"""
import argparse
import hashlib
import hmac
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


def hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    # RFC 5869 with an empty salt (VLP v0.2 section 4); lengths here fit one block.
    prk = hmac.new(b"\0" * 32, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:length]


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


class VlpMaster:
    def __init__(self, count, pid, key_hex, salt_hex):
        # Imported here so the other kinds run without python3-cryptography.
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        self.count, self.pid = count, pid
        agent_key = hkdf_sha256(bytes.fromhex(key_hex), b"varta-agent-v1\0" + struct.pack("<I", pid), 32)
        self.aead = ChaCha20Poly1305(agent_key)
        self.iv_random = hkdf_sha256(bytes.fromhex(salt_hex), b"varta-iv-prefix-v1\0" + struct.pack("<I", 0), 8)
        self.next_counter = 1
        self.frames = VlpPlain(count, pid)

    def check(self, data):
        from cryptography.exceptions import InvalidTag

        if len(data) != 64:
            return f"{len(data)} bytes, a master-key datagram has 64"
        (pid,) = struct.unpack_from("<I", data, 0)
        if pid != self.pid:
            return f"clear pid {pid}, expected {self.pid}"
        iv_random, (counter,) = data[4:12], struct.unpack_from("<I", data, 12)
        if iv_random != self.iv_random:
            return f"IV prefix {iv_random.hex()}, expected {self.iv_random.hex()} from the salt"
        if counter != self.next_counter:
            return f"IV counter {counter}, expected {self.next_counter}"
        try:
            frame = self.aead.decrypt(data[4:16], data[16:64], data[0:4])
        except InvalidTag:
            return "tag does not verify under the agent key"
        print(f"listener:   opened: iv {iv_random.hex()}/{counter}")
        self.next_counter += 1
        return self.frames.check(frame)

    def done(self):
        return self.frames.done()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port_file")
    ap.add_argument("kind", choices=["text", "vlp-plain", "vlp-master"])
    ap.add_argument("count", type=int)
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--key", default="", help="master key, hex (vlp-master)")
    ap.add_argument("--salt", default="", help="session salt, hex (vlp-master)")
    ap.add_argument("--silence", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    if args.kind == "text":
        checker = Text(args.count)
    elif args.kind == "vlp-plain":
        checker = VlpPlain(args.count, args.pid)
    else:
        checker = VlpMaster(args.count, args.pid, args.key, args.salt)

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
    if args.silence > 0:
        sock.settimeout(args.silence)
        try:
            data, peer = sock.recvfrom(2048)
            print(f"listener: REJECTED: {len(data)} bytes from {peer[0]}:{peer[1]} during the silence")
            return 1
        except socket.timeout:
            print(f"listener: silent for {args.silence} s as asked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
