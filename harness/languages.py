"""Real read speech in other languages, for language identification: Debian's Asterisk prompts in Mexican
Spanish (read by the English corpus's speaker), Canadian French, Italian and Russian (`asterisk-core-sounds-
<lang>-g722`, 16 kHz, CC-BY-SA-3.0), each clip trimmed like the "report" corpus. No texts: only the language
is known. Downloaded once into the test assets (`apt-get download`, else Debian's pool), then decoded.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

from harness.assets import SAMPLE_RATE, _run, assets_dir
from harness.speech import _decode, _Download, _download, _tidy

__all__ = ["LANGUAGES", "language_clips"]

_POOL = "http://deb.debian.org/debian/pool/main/a/asterisk-core-sounds"
_PACKAGES = {
    "es": ("es_MX_f_Allison", "e4e3b4281057d3b81b779298fd6be705f57411513955c518eed1bcaabbd615b8"),
    "fr": ("fr_CA_f_June", "7add61d5e42279ecff1bbdf842a5a946ac3644fac9a0fe44384731aa7270c8e0"),
    "it": ("it_IT_m_Carlo", "46b4cf7afc508a5fcfc051b7ea233251c0d195dd4ef83cc4b7facb4c6429b016"),
    "ru": ("ru_RU_f_IvrvoiceRU", "673b4238a6b8269960f055d868c6a11083f7a0d00979167cb01554046b48ed9b"),
}
LANGUAGES = tuple(_PACKAGES)
_SKIPPED = ("digits", "letters", "phonetic", "silence")  # single words and tones


def _source(language: str) -> _Download:
    name = f"asterisk-core-sounds-{language}-g722_1.6.1-1_all.deb"
    return _Download(name, f"{_POOL}/{name}", _PACKAGES[language][1],
                     f"asterisk-core-sounds-{language}-g722=1.6.1-1")


@functools.cache
def language_clips(language: str, min_seconds: float = 1.5, max_seconds: float = 10.0) -> tuple[np.ndarray, ...]:
    """The prompts of one language between these lengths (float32, 16 kHz), in file name order."""
    voice = _PACKAGES[language][0]
    clips = []
    with tempfile.TemporaryDirectory(dir=assets_dir(), prefix=".asterisk-") as tmp:
        _run(["dpkg-deb", "-x", _download(_source(language)), tmp])
        for path in sorted((Path(tmp) / "usr/share/asterisk/sounds" / voice).rglob("*.g722")):
            if path.parent.name in _SKIPPED:
                continue
            try:
                samples = _tidy(_decode(path.read_bytes(), "g722"))
            except ValueError:  # a file with no audio frame
                continue
            if min_seconds <= len(samples) / SAMPLE_RATE <= max_seconds:
                clips.append(samples)
    return tuple(clips)
