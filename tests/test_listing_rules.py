"""The pure rules of listed sources: --include/--exclude globs on ids, and media kinds by extension."""

from __future__ import annotations

import pytest

from pipeline.core.capabilities import CAPABILITIES
from pipeline.core.errors import ManifestError
from pipeline.core.media import kinds_read_by, media_kind
from pipeline.manifest.globs import compile_globs, decide


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("*.jpg", "a.jpg", True),
    ("*.jpg", "x/y/a.jpg", True),  # unanchored: at any depth
    ("*.jpg", "a.jpeg", False),
    ("*.jpg", "a.JPG", False),  # case-sensitive, as OSS keys are
    ("*.{jpg,JPG}", "a.JPG", True),
    ("*", "x/a.jpg", True),  # the last component, at any depth
    ("/*", "x/a.jpg", False),  # anchored: '*' does not cross '/'
    ("/*", "a.jpg", True),
    ("/2024/*.jpg", "2024/a.jpg", True),
    ("/2024/*.jpg", "old/2024/a.jpg", False),
    ("/2024/*.jpg", "2024/raw/a.jpg", False),
    ("/2024/**.jpg", "2024/raw/a.jpg", True),  # '**' crosses '/'
    ("/2024/**", "2024/raw/deep/a.mp4", True),
    ("raw/*.jpg", "2024/raw/a.jpg", True),  # unanchored, on whole components
    ("raw/*.jpg", "2024/xraw/a.jpg", False),
    ("**/raw/*.jpg", "raw/a.jpg", True),  # '**/' is zero or more directories
    ("**/raw/*.jpg", "a/b/raw/a.jpg", True),
    ("tmp/", "tmp/a.jpg", True),  # a trailing '/' is everything under that directory
    ("tmp/", "x/tmp/y/a.jpg", True),
    ("tmp/", "tmpfile.jpg", False),
    ("?.jpg", "a.jpg", True),
    ("?.jpg", "ab.jpg", False),
    ("a?b", "a/b", False),  # '?' is not '/'
    ("[ab].jpg", "b.jpg", True),
    ("[!ab].jpg", "b.jpg", False),
    ("[^ab].jpg", "c.jpg", True),
    ("[a-c]1.mp4", "c1.mp4", True),
    ("x[!a]y", "x/y", False),  # a class never matches '/'
    ("[&~|].jpg", "&.jpg", True),  # set operators are plain members
    ("\\*.jpg", "*.jpg", True),  # escaped: a literal '*'
    ("\\*.jpg", "a.jpg", False),
    ("[unclosed", "[unclosed", True),  # no closing ']': literal
    ("{one}", "{one}", True),  # no comma: literal braces
    ("{a,b\\,c}.jpg", "b,c.jpg", True),
    ("{a,{b,c}d}.jpg", "cd.jpg", True),  # nested alternatives
    ("日本/*.jpg", "x/日本/写真.jpg", True),
    ("a b/*.jpg", "a b/c d.jpg", True),
    ("(x)+.jpg", "(x)+.jpg", True),  # regex metacharacters are literal
    ("(x)+.jpg", "xx.jpg", False),
])
def test_glob_rules(pattern: str, path: str, matches: bool) -> None:
    """Each pattern matches the ids the module docstring says it does (rclone's rules)."""
    assert decide(path, compile_globs(include=[pattern])).kept is matches


def test_an_id_is_kept_by_any_include_and_dropped_by_any_exclude() -> None:
    """Includes are ORed, an exclude wins, and every matching pattern is named in the hits."""
    globs = compile_globs(include=["*.jpg", "2024/"], exclude=["raw/", "*.tmp.jpg"])
    assert globs.patterns == ("*.jpg", "2024/", "raw/", "*.tmp.jpg")
    assert decide("2024/a.jpg", globs).hits == (0, 1)
    assert decide("2024/a.jpg", globs).kept
    assert decide("2024/a.png", globs).kept  # the second include
    assert not decide("x/a.png", globs).kept  # no include
    dropped = decide("2024/raw/a.tmp.jpg", globs)
    assert not dropped.kept and dropped.hits == (0, 1, 2, 3)
    assert decide("anything", compile_globs()).kept  # no pattern: everything


@pytest.mark.parametrize("pattern", ["", "/", "//"])
def test_an_empty_pattern_is_refused(pattern: str) -> None:
    """A pattern with nothing to match is an error naming the flag, not a silent match-all."""
    with pytest.raises(ManifestError, match="is not a pattern") as caught:
        compile_globs(exclude=[pattern])
    assert caught.value.source == "--exclude"


@pytest.mark.parametrize(("name", "kind"), [
    ("a.jpg", "image"), ("dir.mp4/a.JPEG", "image"), ("a.png", "image"), ("x/y.TIFF", "image"), ("a.bmp", "image"),
    ("a.mp4", "video"), ("a.MOV", "video"), ("a.webm", "video"), ("a.mkv", "video"),
    ("a.mp3", "audio"), ("a.wav", "audio"), ("a.m4a", "audio"), ("a.flac", "audio"),
    ("a.gif", None), ("a.txt", None), ("noext", None), (".hidden", None), ("dir.jpg/noext", None), ("a.", None),
])
def test_media_kind_by_extension(name: str, kind: str | None) -> None:
    """The kind comes from the last component's extension, in any case; anything else has none."""
    assert media_kind(name) == kind


@pytest.mark.parametrize(("capability", "kinds"), [
    ("image_analyze", {"image"}), ("object_detection", {"image"}), ("video_segmentation", {"video"}),
    ("video_snapshot", {"video"}), ("video_summarization", {"video"}), ("audio_asr", {"audio", "video"}),
])
def test_kinds_each_capability_reads(capability: str, kinds: set[str]) -> None:
    """Each capability reads the kinds of the file types it takes; transcription reads audio and video."""
    assert kinds_read_by(CAPABILITIES[capability]) == kinds
