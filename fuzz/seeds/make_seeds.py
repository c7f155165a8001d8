#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/seeds/<target>/ (run from anywhere).

The generated files are committed; run.sh does not need Python. Re-run after changing this.
nvlist seeds are the libnv-made vectors of ../shared/testdata/nvlist plus a few lists built
here (descriptors, nesting, big-endian) that the vectors lack.
"""
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.environ.get("NVLIST_TESTDATA", "/work/shared/testdata/nvlist")


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- nvlist: a flat packer (libnv layout, section 4 of the protocol doc) ----------------------

NULL, BOOL, NUMBER, STRING, NVLIST, DESCRIPTOR, BINARY = 1, 2, 3, 4, 5, 6, 7
BOOL_ARRAY, NUMBER_ARRAY, STRING_ARRAY, NVLIST_ARRAY, DESCRIPTOR_ARRAY = 8, 9, 10, 11, 12


def pack(pairs, ndesc=0, flags=0, big=False):
    """pairs: (type, name, data bytes, nitems); flat lists only."""
    e = ">" if big else "<"
    body = b""
    for typ, name, data, nitems in pairs:
        n = name.encode() + b"\0"
        body += struct.pack(e + "BHQQ", typ, len(n), len(data), nitems) + n + data
    flags |= 0x80 if big else 0
    return struct.pack(e + "BBBQQ", 0x6C, 0, flags, ndesc, len(body)) + body


def s(v):
    return v.encode() + b"\0"


def nvlist_seeds():
    out = {}
    for f in sorted(os.listdir(TESTDATA)):
        if f.endswith(".bin"):
            with open(os.path.join(TESTDATA, f), "rb") as fh:
                out[f] = fh.read()
    out["h_descriptors.bin"] = pack(
        [
            (DESCRIPTOR, "fd", struct.pack("<q", 0), 0),
            (DESCRIPTOR_ARRAY, "fds", struct.pack("<qq", 1, 0), 2),
            (STRING, "vmname", s("vm0"), 0),
        ],
        ndesc=2,
    )
    out["h_arrays_be.bin"] = pack(
        [
            (BOOL_ARRAY, "b", b"\x01\x00", 2),
            (NUMBER_ARRAY, "n", struct.pack(">QQ", 1, 2**64 - 1), 2),
            (STRING_ARRAY, "s", b"a\0\0bc\0", 3),
            (BINARY, "x", b"\xde\xad", 0),
            (NULL, "", b"", 0),
            (BOOL, "t", b"\x01", 0),
            (NUMBER, "mtui", struct.pack(">Q", 9000), 0),
            (STRING, "open", s("on"), 0),
        ],
        big=True,
    )
    out["h_flags.bin"] = pack(
        [(STRING, "Open", s("yes"), 0), (STRING, "open", s("no"), 0)], flags=0x03
    )
    # bhyve_config-relevant values the vectors do not cover.
    out["h_keys.bin"] = pack(
        [
            (STRING, "hostfwd", s("udp:1.2.3.4:-10.0.2.99:;tcp::65535-:0"), 0),
            (STRING, "poller", s("poll"), 0),
            (STRING, "batch", s("1"), 0),
            (NUMBER, "mtui", struct.pack("<Q", 65520), 0),
            (STRING, "vmname", s("%(x)"), 0),
        ]
    )
    out["h_pcap.bin"] = pack(
        [
            (STRING, "pcap", s("/var/tmp/vm0.pcap"), 0),
            (STRING, "pcap_max", s("1073741824"), 0),
        ]
    )
    out["h_pcap_bad.bin"] = pack(
        [(STRING, "pcap", s(""), 0), (STRING, "pcap_max", s("9223372036854775808"), 0)]
    )
    # The network keys (issue 12): a custom network with every IPv4 key, and IPv6 on.
    out["h_network.bin"] = pack(
        [
            (STRING, "net", s("192.168.77.0/24"), 0),
            (STRING, "host", s("192.168.77.1"), 0),
            (STRING, "dhcpstart", s("192.168.77.50"), 0),
            (STRING, "dns", s("192.168.77.53"), 0),
            (STRING, "dnssearch", s("a.example;b.example"), 0),
            (STRING, "domainname", s("corp.example"), 0),
            (STRING, "hostname", s("vm-1"), 0),
            (STRING, "dnsproxy", s("off"), 0),
            (STRING, "dhcp", s("on"), 0),
            (STRING, "hostloopback", s("off"), 0),
            (STRING, "outbound", s("172.30.1.2"), 0),
            (STRING, "vmname", s("vm0"), 0),
        ]
    )
    out["h_network6.bin"] = pack(
        [
            (STRING, "ipv6", s("on"), 0),
            (STRING, "net6", s("fd00:1:2:3::/64"), 0),
            (STRING, "host6", s("fd00:1:2:3::2"), 0),
            (STRING, "dns6", s("fd00:1:2:3::3"), 0),
            (STRING, "outbound6", s("fd00::1"), 0),
            (STRING, "vmname", s("vm0"), 0),
        ]
    )
    return out


# --- frames ------------------------------------------------------------------------------------

GUEST_MAC = bytes([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
GW_MAC = bytes([0x52, 0x55, 0x0A, 0x00, 0x02, 0x02])  # libslirp's 10.0.2.2
BCAST = b"\xff" * 6
GUEST_IP = bytes([10, 0, 2, 15])
HOST_IP = bytes([10, 0, 2, 2])
DNS_IP = bytes([10, 0, 2, 3])
# fec0::5054:ff:fe12:3456 (SLAAC from GUEST_MAC in libslirp's default prefix) and fec0::2.
GUEST_IP6 = bytes.fromhex("fec00000000000005054 00fffe123456".replace(" ", ""))
HOST_IP6 = bytes.fromhex("fec00000000000000000000000000002")
GW_MAC6 = bytes.fromhex("525500000002")


def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t > 0xFFFF:
        t = (t & 0xFFFF) + (t >> 16)
    return (~t) & 0xFFFF


def ipv4(proto, src, dst, payload, ident=1, frag=0, total=None):
    tot = total if total is not None else 20 + len(payload)
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tot, ident, frag, 64, proto, 0, src, dst)
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def l4(proto, src, dst, seg, at):
    pseudo = src + dst + struct.pack("!BBH", 0, proto, len(seg))
    c = csum(pseudo + seg) if proto != 1 else csum(seg)
    if proto == 17 and c == 0:
        c = 0xFFFF
    return seg[:at] + struct.pack("!H", c) + seg[at + 2 :]


def eth(dst, typ, payload):
    return dst + GUEST_MAC + struct.pack("!H", typ) + payload


def arp_request():
    return eth(BCAST, 0x0806, struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
               + GUEST_MAC + GUEST_IP + b"\0" * 6 + HOST_IP)


def icmp_echo(dst=HOST_IP, n=56):
    seg = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + bytes(i & 0xFF for i in range(n))
    return eth(GW_MAC, 0x0800, ipv4(1, GUEST_IP, dst, l4(1, GUEST_IP, dst, seg, 2)))


def udp(src, dst, sport, dport, data, dmac=GW_MAC):
    seg = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    return eth(dmac, 0x0800, ipv4(17, src, dst, l4(17, src, dst, seg, 6)))


def dhcp_discover():
    bootp = struct.pack("!BBBBIHH", 1, 1, 6, 0, 0x1234, 0, 0x8000) + b"\0" * 16
    bootp += GUEST_MAC + b"\0" * 10 + b"\0" * 192 + b"\x63\x82\x53\x63"
    bootp += b"\x35\x01\x01" + b"\x37\x03\x01\x03\x06" + b"\xff"
    return udp(b"\0" * 4, b"\xff" * 4, 68, 67, bootp, dmac=BCAST)


def tcp_syn(dst=HOST_IP, dport=22):
    opts = b"\x02\x04\x05\xb4"  # MSS 1460
    seg = struct.pack("!HHIIBBHHH", 40000, dport, 1000, 0, (5 + 1) << 4, 0x02, 64240, 0, 0) + opts
    return eth(GW_MAC, 0x0800, ipv4(6, GUEST_IP, dst, l4(6, GUEST_IP, dst, seg, 16)))


def dns_query():
    q = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00" + b"\x00\x01\x00\x01"
    return udp(GUEST_IP, DNS_IP, 5353, 53, q)


def tftp_rrq():
    return udp(GUEST_IP, HOST_IP, 1069, 69, b"\x00\x01boot.img\x00octet\x00")


def fragments():
    """An ICMP echo of 64 bytes in two fragments: first (MF, offset 0), last (offset 5*8)."""
    seg = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 2) + bytes(56)
    seg = l4(1, GUEST_IP, HOST_IP, seg, 2)
    first = eth(GW_MAC, 0x0800, ipv4(1, GUEST_IP, HOST_IP, seg[:40], ident=7, frag=0x2000))
    last = eth(GW_MAC, 0x0800, ipv4(1, GUEST_IP, HOST_IP, seg[40:], ident=7, frag=5))
    return first, last


def ipv6_ns():
    ip6 = struct.pack("!IHBB", 0x60000000, 32, 58, 255) + b"\xfe\x80" + b"\0" * 13 + b"\x01" + b"\xff\x02" + b"\0" * 11 + b"\x01\xff\x00\x00\x02"
    return eth(b"\x33\x33\xff\x00\x00\x02", 0x86DD, ip6 + bytes(32))


def framed(*frames, fix=0xC000, iterate_after=False):
    out = b""
    for f in frames:
        p = fix | len(f) | (0x2000 if iterate_after else 0)
        out += struct.pack("!H", p) + f
    return out


def main():
    nv = nvlist_seeds()
    for name, data in nv.items():
        write("nvlist_decode", name, data)
        base = name[:-4]
        # [ctl, split1, split2] + payload (see fuzz_targets/bhyve_config.rs)
        write("bhyve_config", base + "_1rec.bin", bytes([0, 0, 0]) + data)
        write("bhyve_config", base + "_2rec.bin", bytes([2, 10, 0]) + data)
        write("bhyve_config", base + "_3rec_open.bin", bytes([3 | 4, 40, 200]) + data)
    write("bhyve_config", "h_descriptors_fds.bin", bytes([0 | (2 << 3), 0, 0]) + nv["h_descriptors.bin"])

    rules = [
        "tcp::2222-:22",
        "tcp:127.0.0.1:8080-:80;udp::5353-10.0.2.15:53",
        "udp:1.2.3.4:-10.0.2.99:",
        "tcp::65535-:0",
        "tcp::00022-:22",
        "tcp:0.0.0.0:1-0.0.0.0:2",
        "tcp::1-:2;;udp::3-:4",
        "sctp::1-:2",
        "tcp:::1:1-:2",
    ]
    for i, r in enumerate(rules):
        write("hostfwd", "rule%02d" % i, r.encode())

    first, last = fragments()
    frames = {
        "arp": framed(arp_request()),
        "icmp_echo": framed(arp_request(), icmp_echo()),
        "icmp_dns_ip": framed(icmp_echo(DNS_IP)),
        "dhcp_discover": framed(dhcp_discover()),
        "tcp_syn": framed(tcp_syn()),
        "tcp_syn_outside": framed(tcp_syn(bytes([192, 0, 2, 1]), 80)),
        "dns_query": framed(dns_query()),
        "tftp_rrq": framed(tftp_rrq()),
        "fragments": framed(first, last),
        "ipv6_ns": framed(ipv6_ns()),
        "runt_and_oversize": framed(b"\x00" * 10, icmp_echo(n=1600), fix=0),
        "mix_iterating": framed(arp_request(), dhcp_discover(), icmp_echo(), tcp_syn(), iterate_after=True),
    }
    # IPv6 (the harness runs with IPv6 on): NS for the host, RS, echo to the host (whole,
    # fragmented, atomic), a TCP SYN, a long extension-header chain, a lone fragment.
    def ip6(nh, payload, src=GUEST_IP6, dst=HOST_IP6, hop=64):
        return struct.pack("!IHBB", 0x60000000, len(payload), nh, hop) + src + dst + payload

    def csum6(src, dst, nh, seg, at):
        pseudo = src + dst + struct.pack("!IxxxB", len(seg), nh)
        c = csum(pseudo + seg)
        return seg[:at] + struct.pack("!H", c) + seg[at + 2:]

    def ns6(target=HOST_IP6):
        sn = b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + target[13:]
        body = struct.pack("!BBHI", 135, 0, 0, 0) + target + b"\x01\x01" + GUEST_MAC
        return eth(b"\x33\x33\xff" + target[13:], 0x86DD,
                   ip6(58, csum6(GUEST_IP6, sn, 58, body, 2), dst=sn, hop=255))

    def rs6():
        ll = b"\xfe\x80" + b"\0" * 6 + GUEST_IP6[8:]
        allr = b"\xff\x02" + b"\0" * 13 + b"\x02"
        body = struct.pack("!BBHI", 133, 0, 0, 0) + b"\x01\x01" + GUEST_MAC
        return eth(b"\x33\x33\0\0\0\x02", 0x86DD, ip6(58, csum6(ll, allr, 58, body, 2), src=ll, dst=allr, hop=255))

    echo6_body = struct.pack("!BBHHH", 128, 0, 0, 0x6006, 1) + bytes(i & 0xFF for i in range(1000))
    echo6_body = csum6(GUEST_IP6, HOST_IP6, 58, echo6_body, 2)
    echo6 = eth(GW_MAC6, 0x86DD, ip6(58, echo6_body))

    def frag6_of(body, nh, off, more, ident=0x66):
        fh = struct.pack("!BBHI", nh, 0, off | (1 if more else 0), ident)
        return eth(GW_MAC6, 0x86DD, ip6(44, fh + body))

    syn6 = struct.pack("!HHIIBBHHH", 40000, 22, 1000, 0, (5 + 1) << 4, 0x02, 64240, 0, 0) + b"\x02\x04\x05\xa0"
    syn6 = eth(GW_MAC6, 0x86DD, ip6(6, csum6(GUEST_IP6, HOST_IP6, 6, syn6, 16)))
    chain = b""
    for i in range(12):
        chain += bytes([60 if i < 11 else 58, 0, 1, 4, 0, 0, 0, 0])
    frames.update({
        "v6_ns_echo": framed(ns6(), echo6, iterate_after=True),
        "v6_rs": framed(rs6()),
        "v6_fragmented_echo": framed(ns6(), frag6_of(echo6_body[504:], 58, 504, False),
                                     frag6_of(echo6_body[:504], 58, 0, True), fix=0x8000),
        "v6_atomic_echo": framed(ns6(), frag6_of(echo6_body, 58, 0, False), fix=0x8000),
        "v6_syn": framed(ns6(), syn6),
        "v6_long_chain": framed(eth(GW_MAC6, 0x86DD, ip6(60, chain + echo6_body[:64])), fix=0x8000),
        "v6_lone_fragment": framed(frag6_of(b"x" * 64, 17, 800, False), fix=0x8000),
    })
    for name, data in frames.items():
        write("frame_path", name, data)
    # libslirp 4.7.0 crashed on this one (finding L1): a last fragment with no train.
    write("frame_path", "lone_last_fragment", framed(last))

    # reasm: [max_datagrams, max_bytes/4K, max_age/100ms] + records [dt, len16, frame]
    def rec(*frames, dt=0, fix=0x8000):
        return b"".join(bytes([dt]) + struct.pack("!H", fix | len(f)) + f for f in frames)

    seg = struct.pack("!HHHH", 5000, 9, 8 + 3000, 0) + bytes(i & 0xFF for i in range(3000))
    seg = l4(17, GUEST_IP, HOST_IP, seg, 6)
    pieces = [(0, seg[:1480]), (1480, seg[1480:2960]), (2960, seg[2960:])]

    def frag(off, data, more, ident=9):
        f = (0x2000 if more else 0) | (off // 8)
        return eth(GW_MAC, 0x0800, ipv4(17, GUEST_IP, HOST_IP, data, ident=ident, frag=f))

    fr = [frag(o, d, o + len(d) < len(seg)) for o, d in pieces]
    limits = bytes([0x80, 0, 100])
    reasm = {
        "in_order": limits + rec(*fr),
        "reversed": limits + rec(*reversed(fr)),
        "lone_last": limits + rec(fr[2]),
        "duplicate": limits + rec(fr[0], fr[0], fr[1], fr[2]),
        "overlap": limits + rec(fr[0], frag(8, seg[8:1488][::-1], True), fr[1], fr[2]),
        "expire_between": bytes([0x80, 0, 1]) + rec(fr[0]) + rec(fr[1], fr[2], dt=50),
        "tiny_limits": bytes([0, 0, 10]) + rec(fr[0], frag(0, seg[:1480], True, ident=10), fr[1], fr[2]),
        "max_offset": limits + rec(frag(0x1FFF * 8, b"x" * 8, False)),
        "icmp_pair_and_passthrough": limits + rec(first, arp_request(), last, icmp_echo()),
    }
    # IPv6 (RFC 8200): a UDP datagram of 3000 bytes in fragments of 1448, and the cases
    # the IPv4 seeds cover, plus atomic fragments and a header before the fragment header.
    def frag6(off, data, more, ident=0x9000, before=b"", before_type=60):
        fh = struct.pack("!BBHI", 17, 0, off | (1 if more else 0), ident)
        nxt = before_type if before else 44
        if before:
            before = bytes([44]) + before[1:]
        pl = len(before) + len(fh) + len(data)
        ip6 = struct.pack("!IHBB", 0x60000000, pl, nxt, 64) + GUEST_IP6 + HOST_IP6
        return eth(GW_MAC6, 0x86DD, ip6 + before + fh + data)

    seg6 = struct.pack("!HHHH", 5000, 9, 8 + 3000, 0) + bytes(i & 0xFF for i in range(3000))
    pieces6 = [(0, seg6[:1448]), (1448, seg6[1448:2896]), (2896, seg6[2896:])]
    fr6 = [frag6(o, d, o + len(d) < len(seg6)) for o, d in pieces6]
    dest_opts = bytes([0, 0, 1, 4, 0, 0, 0, 0])
    reasm.update({
        "v6_in_order": limits + rec(*fr6),
        "v6_reversed": limits + rec(*reversed(fr6)),
        "v6_lone_last": limits + rec(fr6[2]),
        "v6_duplicate_overlap": limits + rec(fr6[0], fr6[0], frag6(8, seg6[8:1456], True), fr6[1]),
        "v6_atomic": limits + rec(frag6(0, seg6[:64], False), frag6(0, seg6[:64], False, before=dest_opts)),
        "v6_dest_opts_first": limits + rec(frag6(0, seg6[:1448], True, before=dest_opts), fr6[1], fr6[2]),
        "v6_max_offset": limits + rec(frag6(0xFFF8, b"x" * 8, False)),
        "v6_mixed_with_v4": limits + rec(fr[0], fr6[0], fr[1], fr6[1], fr[2], fr6[2]),
    })
    for name, data in reasm.items():
        write("reasm", name, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
