"""probes.parse_tcp_info: struct tcp_info read by offset from bytes, each field only where the bytes reach.

The sample was read on Linux 6.18 (x86_64, loopback) from a server's socket
right after it sent three responses of 100 bytes; tests/test_probes.py reads
live sockets.
"""

import dataclasses
import itertools
import struct

import pytest

from epollbook.probes import TCP_INFO_FIELDS, TcpInfo, parse_tcp_info

pytestmark = pytest.mark.quick

THREE_SENDS_OF_100_BYTES = bytes.fromhex(
    "010000000007aa01e01c03000000000000800000180200000000000000000000000000000000000000000000340000000000000034000000"
    "34000000ffff0000cbff0000100000000b000000ffffff7f0d000000cbff00000500000000000000cbff0000000000000db227e909000000"
    "ffffffffffffffff2c010000000000000000000000000000030000000500000000000000040000000000000003000000000048e801000000"
    "00000000000000000000000000000000000000000000000004000000000000002c0100000000000000000000000000000000000000000000"
    "0000000000000100000001000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
)


def test_a_real_reading_gives_the_segments_bytes_and_round_trip_the_kernel_counted():
    info = parse_tcp_info(THREE_SENDS_OF_100_BYTES)
    assert info.size == 280
    assert (info.state, info.state_name) == (1, "ESTABLISHED")
    assert (info.data_segs_out, info.bytes_sent, info.bytes_acked) == (3, 300, 300), info
    assert (info.segs_out, info.segs_in, info.data_segs_in) == (3, 5, 0), info
    assert (info.rtt_us, info.rttvar_us, info.min_rtt_us, info.rto_us) == (16, 11, 4, 204000), info
    assert (info.snd_cwnd, info.snd_mss, info.pmtu, info.delivered) == (13, 32768, 65535, 4), info
    assert (info.unacked, info.retrans, info.total_retrans, info.notsent_bytes) == (0, 0, 0, 0), info


def test_each_field_is_read_at_its_own_offset_in_its_own_size():
    data = bytearray(280)
    for number, (_, offset, form) in enumerate(TCP_INFO_FIELDS, start=1):
        struct.pack_into("=" + form, data, offset, number)
    info = parse_tcp_info(bytes(data))
    read = [getattr(info, name) for name, _, _ in TCP_INFO_FIELDS]
    assert read == list(range(1, len(TCP_INFO_FIELDS) + 1)), "a field overlaps another or is read at a wrong offset"


def test_a_field_the_returned_bytes_do_not_reach_is_none_and_one_they_just_reach_is_read():
    # 160 bytes end exactly at data_segs_out's end (Linux 4.6 to 4.17 returned so many).
    info = parse_tcp_info(THREE_SENDS_OF_100_BYTES[:160])
    assert (info.size, info.data_segs_out, info.delivered, info.bytes_sent) == (160, 3, None, None), info
    # One byte short of data_segs_out's end: it is not read from a partial field.
    assert parse_tcp_info(THREE_SENDS_OF_100_BYTES[:159]).data_segs_out is None
    # 104 bytes: a kernel before Linux 4.0 (no segs_out yet).
    old = parse_tcp_info(THREE_SENDS_OF_100_BYTES[:104])
    assert (old.total_retrans, old.segs_out, old.data_segs_out) == (0, None, None), old


def test_the_fields_table_matches_the_kernels_struct_and_the_class():
    offsets = {name: offset for name, offset, _ in TCP_INFO_FIELDS}
    # Offsets of include/uapi/linux/tcp.h, checked by hand against the header.
    assert (offsets["rtt_us"], offsets["segs_out"], offsets["data_segs_out"], offsets["bytes_sent"]) == (
        68, 136, 156, 200)
    spans = [(offset, offset + struct.calcsize("=" + form)) for _, offset, form in TCP_INFO_FIELDS]
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans)), "fields overlap or are out of order"
    assert all(offset % struct.calcsize("=" + form) == 0 for _, offset, form in TCP_INFO_FIELDS), "a misaligned field"
    assert [field.name for field in dataclasses.fields(TcpInfo)] == ["size"] + [name for name, _, _ in TCP_INFO_FIELDS]


def test_an_unknown_state_is_named_by_its_number():
    assert TcpInfo(size=1, state=99).state_name == "state 99"
    assert TcpInfo(size=0).state_name is None


@pytest.mark.parametrize("data, words", [
    (b"", "no bytes"),
    ("0100", "not from str"),
    (None, "not from NoneType"),
])
def test_what_is_not_the_bytes_of_tcp_info_gets_one_sentence(data, words):
    with pytest.raises(ValueError, match=words):
        parse_tcp_info(data)
