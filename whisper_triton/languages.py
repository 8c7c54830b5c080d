"""Whisper's languages: codes in vocabulary order, English names, and request normalisation."""

from __future__ import annotations

from whisper_triton.errors import InvalidRequestError

# Vocabulary order matters: a model with N languages knows the first N (99 before large-v3).
LANGUAGES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak",
    "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian", "mk": "macedonian",
    "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian", "ne": "nepali",
    "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer",
    "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan",
    "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi", "gu": "gujarati",
    "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek", "fo": "faroese",
    "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese",
    "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog",
    "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala",
    "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}  # fmt: skip

# Names and aliases clients send instead of ISO-639-1 codes.
_ALIASES: dict[str, str] = {name: code for code, name in LANGUAGES.items()}
_ALIASES.update(
    {"burmese": "my", "valencian": "ca", "flemish": "nl", "haitian": "ht", "letzeburgesch": "lb",
     "pushto": "ps", "panjabi": "pa", "moldavian": "ro", "moldovan": "ro", "sinhalese": "si",
     "castilian": "es", "mandarin": "zh", "jv": "jw", "nb": "no", "iw": "he", "in": "id"}
)  # fmt: skip


def supported_languages(num_languages: int) -> list[str]:
    return list(LANGUAGES)[:num_languages]


def normalize_language(value: str | None, num_languages: int = len(LANGUAGES)) -> str | None:
    """Maps an ISO-639-1 code, a BCP-47 tag (`en-US`, `zh_Hant`) or an English name to a code.

    Returns None for an empty value (detect the language). Raises InvalidRequestError otherwise.
    """
    if value is None or not value.strip():
        return None
    raw = value.strip().lower()
    primary = raw.replace("_", "-").split("-")[0]
    for candidate in (raw, primary):
        code = candidate if candidate in LANGUAGES else _ALIASES.get(candidate)
        if code is not None:
            if code not in supported_languages(num_languages):
                break
            return code
    raise InvalidRequestError(
        f"Unsupported language '{value[:64]}'. Use an ISO-639-1 code such as 'en' or a BCP-47 tag "
        "such as 'en-US'.",
        param="language",
    )


def language_name(code: str) -> str:
    return LANGUAGES.get(code, code)
