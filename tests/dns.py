"""A real DNS server on loopback for the tests (dnslib), with zones that misbehave.

* ``NAME.ok.test``: A 127.0.0.2 (the address of a test webhook), TTL 60;
  ``v6-NAME.ok.test`` has AAAA ::1 first, then A 127.0.0.2;
  ``big-N.ok.test`` has N A records, 127.0.1.0 onwards (truncated over UDP
  when they do not fit the client's datagram: 60 fit an EDNS one of 1232
  bytes, 300 do not);
  ``chain-N.ok.test`` is a CNAME chain of N links ending at an A record;
  ``loop.ok.test`` is a CNAME to itself;
* ``NAME.stall.test``: never answered, over UDP or TCP (a zone whose
  nameserver is down or drops queries);
* a name given answers with ``set(name, *answers)``: each lookup takes the
  next answer (the last one repeats), a list of addresses or None for
  NXDOMAIN (the A query takes the IPv4 ones, the AAAA query the IPv6 ones);
* anything else: NXDOMAIN.

Every query is counted per zone, so a test can tell how many reached a zone.
"""

from __future__ import annotations

import ipaddress
import socket
import threading

from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSError, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

WEBHOOK_ADDRESS = "127.0.0.2"


class _Zones(BaseResolver):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queries: dict[str, int] = {}
        self.names: list[str] = []
        self.answers: dict[str, list[list[str] | None]] = {}
        self.asked: dict[tuple[str, str], int] = {}

    def _count(self, zone: str, name: str) -> None:
        with self.lock:
            self.queries[zone] = self.queries.get(zone, 0) + 1
            self.names.append(name)

    def resolve(self, request: DNSRecord, handler) -> DNSRecord:
        question = request.q
        name = str(question.qname).rstrip(".").lower()
        qtype = QTYPE[question.qtype]
        reply = request.reply()
        if name in self.answers:
            return self._chosen(name, qtype, reply)
        if name.endswith(".stall.test"):
            self._count("stall.test", name)
            raise DNSError("stalled zone: no answer")  # dnslib then sends nothing
        if not name.endswith(".ok.test"):
            self._count("other", name)
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        self._count("ok.test", name)
        label = name[: -len(".ok.test")]
        if label == "loop":
            reply.add_answer(RR(name, QTYPE.CNAME, rdata=CNAME(name + "."), ttl=60))
            return reply
        if label.startswith("chain-"):
            links = int(label.split("-")[1])
            for i in range(links, 0, -1):
                target = f"chain-{i - 1}.ok.test" if i > 1 else "end.ok.test"
                owner = name if i == links else f"chain-{i}.ok.test"
                reply.add_answer(RR(owner, QTYPE.CNAME, rdata=CNAME(target + "."), ttl=60))
            if qtype == "A":
                reply.add_answer(RR("end.ok.test", QTYPE.A, rdata=A(WEBHOOK_ADDRESS), ttl=60))
            return reply
        if label.startswith("big-"):
            if qtype == "A":
                first = int(ipaddress.IPv4Address("127.0.1.0"))
                for i in range(int(label.split("-")[1])):
                    address = str(ipaddress.IPv4Address(first + i))
                    reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=60))
            return reply
        if qtype == "AAAA" and label.startswith("v6-"):
            reply.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA("::1"), ttl=60))
        if qtype == "A":
            reply.add_answer(RR(name, QTYPE.A, rdata=A(WEBHOOK_ADDRESS), ttl=60))
        return reply

    def _chosen(self, name: str, qtype: str, reply: DNSRecord) -> DNSRecord:
        with self.lock:
            self.queries[name] = self.queries.get(name, 0) + 1
            asked = self.asked.get((name, qtype), 0)
            self.asked[name, qtype] = asked + 1
            answers = self.answers[name]
            answer = answers[min(asked, len(answers) - 1)]
        if answer is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for address in answer:
            version = ipaddress.ip_address(address).version
            if (qtype, version) == ("A", 4):
                reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=60))
            elif (qtype, version) == ("AAAA", 6):
                reply.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(address), ttl=60))
        return reply


class _Handler(DNSHandler):
    """Answers over UDP that do not fit the client's datagram (512 bytes, or the
    size its EDNS record gives) are truncated to the question (as BIND and
    Unbound do; dnslib's own truncation drops the question too), so that a
    client asks again over TCP, or takes the truncated answer as it is."""

    def get_reply(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        reply = self.server.resolver.resolve(request, self)
        packed = reply.pack()
        room = max([512] + [rr.rclass for rr in request.ar if rr.rtype == QTYPE.OPT])
        if self.protocol == "udp" and len(packed) > room:
            truncated = request.reply()
            truncated.header.tc = 1
            packed = truncated.pack()
        return packed


class DnsServer:
    """UDP and TCP on one free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.zones = _Zones()
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", logf=_drop)
        for _ in range(20):
            port = _free_port()
            self.udp = DNSServer(
                self.zones, port=port, address="127.0.0.1", logger=quiet, handler=_Handler
            )
            try:
                self.tcp = DNSServer(
                    self.zones,
                    port=port,
                    address="127.0.0.1",
                    tcp=True,
                    logger=quiet,
                    handler=_Handler,
                )
            except OSError:  # the port was free for UDP only
                self.udp.server.server_close()
                continue
            break
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.udp.start_thread()
        self.tcp.start_thread()

    def set(self, name: str, *answers: list[str] | None) -> None:
        with self.zones.lock:
            self.zones.answers[name.lower().rstrip(".")] = list(answers)

    def queries(self, zone: str) -> int:
        with self.zones.lock:
            return self.zones.queries.get(zone, 0)

    def close(self) -> None:
        for server in (self.udp, self.tcp):
            server.stop()
            server.server.server_close()


def _drop(*_args) -> None:
    pass


def _free_port() -> int:
    """A port free for both UDP and TCP at the time of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
