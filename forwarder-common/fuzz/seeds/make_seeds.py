#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets: a few real packets, checksums included.

Run from anywhere; rewrites seeds/<target>/*.bin next to this script.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(ethertype: int, payload: bytes, vlan: int | None = None) -> bytes:
    dst, src = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return dst + src + tag + struct.pack("!H", ethertype) + payload


def ipv4(proto: int, src: bytes, dst: bytes, l4: bytes) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0x1234, 0x4000, 64, proto, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + l4


def ipv6(next_hdr: int, src: bytes, dst: bytes, l4: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), next_hdr, 64, src, dst) + l4


def tcp(pseudo: bytes, sport: int, dport: int, flags: int, opts: bytes, payload: bytes = b"") -> bytes:
    assert len(opts) % 4 == 0
    doff = (20 + len(opts)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, doff << 4, flags, 0xFFFF, 0, 0) + opts + payload
    ck = csum(pseudo + seg)
    return seg[:16] + struct.pack("!H", ck) + seg[18:]


def udp(pseudo: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ck = csum(pseudo + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", ck) + seg[8:]


def pseudo4(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    return src + dst + struct.pack("!BBH", 0, proto, length)


def pseudo6(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    return src + dst + struct.pack("!IxxxB", length, proto)


V4_CLIENT, V4_VPS = bytes([198, 51, 100, 7]), bytes([203, 0, 113, 1])
V6_CLIENT = bytes.fromhex("20010db8000000000000000000000007")
V6_VPS = bytes.fromhex("20010db8000000010000000000000001")
SYN = 0x02
# MSS 1460, SACK permitted, timestamps, NOP, window scale 7 (what Linux sends).
LINUX_OPTS = bytes.fromhex("020405b4" "0402" "080a0000000100000000" "01" "030307")
# MSS 1440 after two NOPs, padded with EOL.
NOP_OPTS = bytes.fromhex("0101" "020405a0" "0000")


def ip4_syn() -> bytes:
    seg = tcp(pseudo4(V4_CLIENT, V4_VPS, 6, 20 + len(LINUX_OPTS)), 51000, 443, SYN, LINUX_OPTS)
    return ipv4(6, V4_CLIENT, V4_VPS, seg)


def ip6_syn() -> bytes:
    opts = bytes.fromhex("020405a0" "0402" "080a0000000100000000" "01" "030307")
    seg = tcp(pseudo6(V6_CLIENT, V6_VPS, 6, 20 + len(opts)), 51001, 80, SYN, opts)
    return ipv6(6, V6_CLIENT, V6_VPS, seg)


def ip4_udp() -> bytes:
    payload = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
    seg = udp(pseudo4(V4_CLIENT, V4_VPS, 17, 8 + len(payload)), 53000, 53, payload)
    return ipv4(17, V4_CLIENT, V4_VPS, seg)


def ip4_syn_nops() -> bytes:
    seg = tcp(pseudo4(V4_CLIENT, V4_VPS, 6, 20 + len(NOP_OPTS)), 51002, 443, SYN, NOP_OPTS)
    return ipv4(6, V4_CLIENT, V4_VPS, seg)


def write(target: str, name: str, data: bytes) -> None:
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


packets = {
    "ipv4-tcp-syn-mss": ip4_syn(),
    "ipv6-tcp-syn-mss": ip6_syn(),
    "ipv4-udp-dns": ip4_udp(),
    "ipv4-tcp-syn-nops-mss": ip4_syn_nops(),
}
for name, ip in packets.items():
    write("parse_ip", f"{name}.bin", ip)
    write("parse_ethernet", f"eth-{name}.bin", eth(0x86DD if ip[0] >> 4 == 6 else 0x0800, ip))
write("parse_ethernet", "eth-vlan-ipv4-tcp-syn-mss.bin", eth(0x0800, ip4_syn(), vlan=100))

# csum_incremental: 12 selector/value bytes, then the buffer. Real headers whose
# checksum field is chosen by the first selector (word index).
def sel(ck_word: int, f4: int, f2: int, new4: bytes, new2: bytes) -> bytes:
    return struct.pack("<HHH", ck_word, f4, f2) + new4 + new2

ip = ip4_syn()
# IPv4 header: checksum at word 5; rewrite the destination (word 8) and the TTL/proto word.
write("csum_incremental", "ipv4-header-dnat.bin", sel(5, 6, 4, bytes([10, 0, 0, 2]), b"\x3f\x06") + ip[:20])
# TCP segment: checksum at word 8; rewrite a 4-byte field and the MSS value.
write("csum_incremental", "tcp-syn-mss-clamp.bin", sel(8, 1, 11, bytes([0, 0, 0, 9]), b"\x05\x28") + ip[20:])
ip6 = ip6_syn()
write("csum_incremental", "ipv6-tcp-syn.bin", sel(28, 10, 2, bytes([0xFD, 0, 0, 1]), b"\x00\x50") + ip6)
write("csum_incremental", "udp-dns.bin", sel(3, 0, 1, bytes([192, 0, 2, 1]), b"\x00\x35") + ip4_udp()[20:])

# TCP option areas as the kernel records them from SYNs and data segments.
write("tcp_options", "linux-syn.bin", bytes([2, 4, 0x05, 0xB4, 4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, 7]))
write("tcp_options", "data-timestamps.bin", bytes([1, 1, 8, 10, 0, 0, 3, 9, 0, 0, 0x23, 0x28]))
write("tcp_options", "windows-syn.bin", bytes([2, 4, 0x05, 0xB4, 1, 3, 3, 8, 1, 1, 4, 2]))

# quic_initial: a mode byte, then datagrams (mode bit 0 clear) or plaintext Initial
# payloads that the target seals itself (bit 0 set; bit 1: QUIC v2), each behind a
# 2-byte big-endian length. Raw seeds are RFC 9001 / RFC 9369 appendix A's client Initials.
vectors = {}
with open(os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "quic-initial-vectors.txt")) as f:
    for line in f:
        if " = " in line and not line.startswith("#"):
            k, v = line.split(" = ", 1)
            try:
                vectors[k.strip()] = bytes.fromhex(v.strip())
            except ValueError:
                pass

def chunks(mode: int, parts: list[bytes]) -> bytes:
    return bytes([mode]) + b"".join(struct.pack(">H", len(p)) + p for p in parts)

write("quic_initial", "rfc9001-client-initial.bin", chunks(0, [vectors["v1_client_protected_initial_packet"]]))
write("quic_initial", "rfc9369-client-initial.bin", chunks(0, [vectors["v2_client_protected_initial_packet"]]))
hello = vectors["v1_client_crypto_frame_unpadded"][4:]  # the frame's ClientHello

def crypto(offset: int, data: bytes) -> bytes:
    def varint(v: int) -> bytes:
        return bytes([v]) if v < 64 else struct.pack(">H", 0x4000 | v)
    return b"\x06" + varint(offset) + varint(len(data)) + data

write("quic_initial", "split-client-hello.bin", chunks(1, [crypto(100, hello[100:]), b"\x01" + crypto(0, hello[:100])]))
write("quic_initial", "split-client-hello-v2.bin", chunks(3, [crypto(0, hello[:60]), b"\x02\x01\x00\x00\x00" + crypto(60, hello[60:])]))
