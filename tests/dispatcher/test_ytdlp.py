"""yt-dlp as a library: a local page embedding a video, with the SSRF guard and byte cap."""

import hashlib
import socket

import pytest

from dfd.errors import RejectedURLError
from dfd.settings import Settings
from dispatcher.errors import DownloadTooLargeError, ExtractorNotAllowedError, NotMediaError
from dispatcher.fetch import fetch
from dispatcher.ytdlp import is_platform_url

pytestmark = pytest.mark.unit


def make_settings(tmp_path, **overrides):
    values = {
        "data_dir": tmp_path / "data",
        "fetch_backoff_s": 0.01,
        "fetch_allowed_networks": ["127.0.0.1/32"],
    }
    values.update(overrides)
    return Settings(**values)


def page(video_src: str, title: str = "A talking face") -> bytes:
    return (
        f"<!doctype html><html><head><title>{title}</title>"
        f'<meta property="og:title" content="{title}"></head><body>'
        f'<video controls><source src="{video_src}" type="video/mpeg"></video>'
        "</body></html>"
    ).encode()


def test_page_embedding_a_video_is_fetched_through_the_generic_extractor(server, clip, tmp_path):
    server.file("/watch/42", page("/media/clip.mpg"), "text/html; charset=utf-8")
    server.file("/media/clip.mpg", clip, "video/mpeg")
    got = fetch(server.url("/watch/42"), tmp_path / "job", make_settings(tmp_path))
    assert got.page_url == server.url("/watch/42")
    assert got.final_url == server.url("/media/clip.mpg")
    assert got.sha256 == hashlib.sha256(clip).hexdigest()
    assert got.path.read_bytes() == clip
    # the page was read (by yt-dlp, through the guarded handler) and the video once
    assert server.paths().count("/media/clip.mpg") == 1
    assert "/watch/42" in server.paths()


def test_every_ytdlp_request_goes_through_the_pinned_guarded_client(server, clip, tmp_path):
    calls = []

    def resolver(host, port, type=0, **_):
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    server.file("/watch/7", page(f"http://cdn.test:{server.port}/v.mpg"), "text/html")
    server.file("/v.mpg", clip, "video/mpeg")
    got = fetch(
        f"http://pages.test:{server.port}/watch/7",
        tmp_path / "job",
        make_settings(tmp_path),
        resolver=resolver,
    )
    assert got.size == len(clip)
    hosts = {seen.path: seen.host for seen in server.seen}
    assert hosts["/watch/7"] == f"pages.test:{server.port}"
    assert hosts["/v.mpg"] == f"cdn.test:{server.port}"
    assert set(calls) == {"pages.test", "cdn.test"}


@pytest.mark.parametrize(
    "src",
    [
        "http://169.254.169.254/latest/meta-data/video.mpg",
        "http://10.0.0.1/video.mpg",
        "http://[::1]:{port}/media/clip.mpg",
        "http://2130706434:{port}/media/clip.mpg",
    ],
)
def test_a_media_url_on_a_forbidden_address_is_refused(server, clip, tmp_path, src):
    server.file("/watch/1", page(src.format(port=server.port)), "text/html")
    server.file("/media/clip.mpg", clip, "video/mpeg")
    with pytest.raises(RejectedURLError):
        fetch(server.url("/watch/1"), tmp_path / "job", make_settings(tmp_path))
    assert "/media/clip.mpg" not in server.paths()


def test_a_page_redirecting_to_a_forbidden_address_is_refused(server, tmp_path):
    # the direct fetch sees HTML; yt-dlp then asks again and is redirected to metadata
    answers = iter([(200, {"Content-Type": "text/html"}, page("/x.mpg"))])
    server.route(
        "/watch/2",
        lambda _s: next(answers, (302, {"Location": "http://169.254.169.254/latest/"}, b"")),
    )
    with pytest.raises(RejectedURLError, match="metadata"):
        fetch(server.url("/watch/2"), tmp_path / "job", make_settings(tmp_path))


def test_an_oversize_video_is_refused(server, clip, tmp_path):
    server.file("/watch/3", page("/media/big.mpg"), "text/html")
    server.file("/media/big.mpg", clip, "video/mpeg")
    s = make_settings(tmp_path, max_download_bytes=len(clip) // 2)
    with pytest.raises(DownloadTooLargeError, match="the limit is"):
        fetch(server.url("/watch/3"), tmp_path / "job", s)
    assert list((tmp_path / "job").glob("*")) == [] if (tmp_path / "job").exists() else True


def test_an_oversize_page_is_refused_while_extracting(server, tmp_path):
    big = page("/media/clip.mpg") + b"<!--" + b"x" * 50_000 + b"-->"
    server.file("/watch/4", big, "text/html")
    s = make_settings(tmp_path, ytdlp_page_max_bytes=10_000)
    with pytest.raises(DownloadTooLargeError, match="while extracting"):
        fetch(server.url("/watch/4"), tmp_path / "job", s)


def test_a_page_without_a_video_is_not_media(server, tmp_path):
    server.file(
        "/about", b"<html><head><title>About</title></head><body>text</body></html>", "text/html"
    )
    with pytest.raises(NotMediaError, match="found no video"):
        fetch(server.url("/about"), tmp_path / "job", make_settings(tmp_path))


def test_extractors_not_allowed_are_not_used(server, clip, tmp_path):
    server.file("/watch/5", page("/media/clip.mpg"), "text/html")
    server.file("/media/clip.mpg", clip, "video/mpeg")
    s = make_settings(tmp_path, ytdlp_extractors=["youtube"])
    with pytest.raises(ExtractorNotAllowedError, match="no allowed extractor"):
        fetch(server.url("/watch/5"), tmp_path / "job", s)
    assert "/media/clip.mpg" not in server.paths()


def test_platform_hosts_go_to_ytdlp_only_when_their_extractor_is_allowed(tmp_path):
    s = make_settings(tmp_path)
    assert is_platform_url("https://www.youtube.com/watch?v=x", s)
    assert is_platform_url("https://youtu.be/x", s)
    assert not is_platform_url("https://notyoutube.com/watch?v=x", s)
    assert not is_platform_url(
        "https://www.youtube.com/watch?v=x", make_settings(tmp_path, ytdlp_extractors=["generic"])
    )
