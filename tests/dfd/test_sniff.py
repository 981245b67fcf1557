"""Magic bytes: the container (or what else) a file's first bytes name."""

import os

import pytest

from dfd.sniff import sniff

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("head", "kind", "media"),
    [
        (b"\0\0\0\x20ftypisom\0\0\2\0", "mp4", "video"),
        (b"\0\0\0\x14ftypqt  ", "mov", "video"),
        (b"\0\0\0\x08wide\0\0\0\0mdat", "mov", "video"),
        (b"\0\0\0\x20ftypM4A \0\0\0\0", "m4a", "audio"),
        (b"\0\0\0\x20ftyp3gp5", "3gp", "video"),
        (b"\0\0\0\x1cftypavif", "image", "other"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "matroska", "video"),
        (b"RIFF\0\0\0\0AVI LIST", "avi", "video"),
        (b"RIFF\0\0\0\0WAVEfmt ", "wav", "audio"),
        (b"\0\0\1\xba\x44\0\4\0", "mpeg-ps", "video"),
        (b"\0\0\1\xb3\x16\0\xf0", "mpeg-es", "video"),
        (b"\x47" + b"\xff" * 187 + b"\x47" + b"\0" * 10, "mpeg-ts", "video"),
        (b"\0\0\0\0\x47" + b"\xff" * 191 + b"\x47" + b"\0" * 10, "mpeg-ts", "video"),  # M2TS
        (b"FLV\x01\x05", "flv", "video"),
        (b"OggS\0\2", "ogg", "video"),
        (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9", "asf", "video"),
        (b"YUV4MPEG2 W16 H16 F25:1\n", "y4m", "video"),
        (b"fLaC\0\0\0\x22", "flac", "audio"),
        (b"ID3\x04\0\0", "mp3", "audio"),
        (b"\xff\xd8\xff\xe0\0\x10JFIF", "image", "other"),
        (b"\x89PNG\r\n\x1a\n\0\0", "image", "other"),
        (b"GIF89a\1\0", "gif", "video"),
        (b"RIFF\0\0\0\0WEBPVP8X\0\0\0\0\2\0\0\0\0\0\0\0\0\0\0ANIM", "webp", "video"),
        (b"RIFF\0\0\0\0WEBPVP8 \0\0", "image", "other"),
        (b"%PDF-1.7\n", "pdf", "other"),
        (b"PK\x03\x04\x14\0", "zip", "other"),
        (b"<!doctype html><html>", "text", "other"),
        ("naïve text, ünïcode ✓\n".encode(), "text", "other"),
        (b"", "empty", "other"),
    ],
)
def test_known_heads(head, kind, media):
    got = sniff(head)
    assert (got.kind, got.media) == (kind, media)
    assert got.may_hold_video == (media == "video")


def test_random_bytes_are_unknown_and_say_how_they_start():
    head = b"\x13\x37" + os.urandom(510)
    got = sniff(head)
    assert got.kind == "unknown" and "13 37" in got.detail


@pytest.mark.parametrize(
    ("head", "mime", "suffix"),
    [
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "video/webm", ".webm"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska", "video/x-matroska", ".mkv"),
        (b"\0\0\0\x20ftypisom\0\0\2\0", "video/mp4", ".mp4"),
        (b"\0\0\1\xba\x44\0\4\0", "video/mpeg", ".mpg"),
        (b"%PDF-1.7\n", None, ".bin"),
    ],
)
def test_media_type_and_suffix_a_stored_copy_gets(head, mime, suffix):
    got = sniff(head)
    assert (got.mime, got.suffix) == (mime, suffix)


def test_a_lone_sync_byte_is_not_a_transport_stream():
    # One 0x47 at offset 0 with no second packet is not enough to call it MPEG-TS.
    assert sniff(b"G" + b"x" * 100).kind == "text"
    assert sniff(b"\x47" + b"\xff" * 187 + b"\x46" + b"\0" * 10).kind != "mpeg-ts"
