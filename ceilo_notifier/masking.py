"""Keep credentials out of logs and events.

Action URLs carry secrets (``user:password@``, trust ids, tokens in query
strings). Everything that logs or records an action goes through
``mask_url``; ``MaskingFilter`` is the safety net for any other log line.
The same filter escapes control characters, so that no caller can forge a
log line with a newline in an alarm name, a reason or an action.

Schemes whose secrets these rules cannot find (an Apprise service's tokens
are path segments: ``slack://T000/B000/XXXX``) are masked by their plugin:
``register_scheme_mask`` (called as plugins are loaded) makes ``mask_url``
hand such a URL to it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib import parse

from oslo_utils import strutils

MASK = "***"

_SECRET_KEYS = re.compile(
    r"(pass|secret|token|key|auth|signature|sig|credential|session|api[-_]?key)",
    re.IGNORECASE,
)
# scheme://userinfo@ anywhere in a text; userinfo may hold ':' but not '/', '@' or space.
# Up to the last '@' before the path: a password may hold an '@' of its own.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s'\"]+)@")
# An authority whose password holds a '/' (the parser takes the rest for a path).
_SLASHED_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^?#\s]*@")
# A URL the parser cannot read, or reads otherwise than it is written (it
# drops blanks and tabs): everything up to its last '@' may be secret.
_ANY_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://).*@", re.DOTALL)
_BLANK_OR_QUOTE = re.compile("[\x00-\x20\x7f-\x9f'\"\\\u2028\u2029]")


# name=value in a query string, where the name looks like a secret's.
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&][^=&\s]*(?:pass|secret|token|key|auth|signature|sig|credential|session)"
    r"[^=&\s]*=)[^&\s'\"]+",
    re.IGNORECASE,
)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Escaped as well: a lone surrogate cannot even be written to a UTF-8 log.
_ESCAPED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# What no database of the journal stores in a text column: PostgreSQL refuses
# NUL, and no UTF-8 database a lone surrogate (JSON's "\\ud800" decodes to one).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def has_control(text: str) -> bool:
    """True when text holds a control character (a newline, a tab, an escape...)."""
    return _CONTROL.search(text) is not None


def escape_control(text: str) -> str:
    """Text with every control character and lone surrogate written as an escape
    (``\\n``, ``\\x1b``, ``\\ud800``)."""
    if not _ESCAPED.search(text):
        return text
    return _ESCAPED.sub(
        lambda m: _ESCAPES.get(m.group(), m.group().encode("unicode_escape").decode()), text
    )


def unstorable(text: str) -> str | None:
    """The first code point of text that the journal cannot store, named
    (``U+0000 (NUL)``, ``U+D800 (a lone surrogate)``); None when there is none."""
    match = _UNSTORABLE.search(text)
    if match is None:
        return None
    point = ord(match.group())
    return f"U+{point:04X} ({'NUL' if point == 0 else 'a lone surrogate'})"


def replace_unstorable(text: str) -> str:
    """Text with every code point the journal cannot store replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def _mask_all(text: str) -> str:
    if "@" in text:
        text = _USERINFO.sub(_mask_userinfo, text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: m.group("key") + MASK, text)
    return text


def _mask_userinfo(match: re.Match) -> str:
    userinfo = match.group("userinfo")
    user, sep, _password = userinfo.partition(":")
    scheme = match.group("scheme")
    if scheme.lower().startswith("trust+"):
        return f"{scheme}{MASK}@"
    if sep:
        return f"{scheme}{user}:{MASK}@"
    return f"{scheme}{userinfo}@"


# Scheme (lower case) -> the function that masks a URL of it wholly.
_SCHEME_MASKS: dict[str, Callable[[str], str]] = {}
_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*):")


def register_scheme_mask(schemes: list[str] | set[str], mask: Callable[[str], str]) -> None:
    """Have ``mask_url`` hand the URLs of these schemes to ``mask``, which must
    return them with every secret masked (and must not raise)."""
    for scheme in schemes:
        _SCHEME_MASKS[scheme.lower()] = mask


def unregister_scheme_masks(schemes) -> None:
    """Mask these schemes by the rules above again (a plugin of their own serves them)."""
    for scheme in schemes:
        _SCHEME_MASKS.pop(scheme.lower(), None)


def mask_url(url: object) -> str:
    """Return url with its password, trust id and secret query values masked."""
    text = str(url)
    if _SCHEME_MASKS:
        match = _SCHEME.match(text)
        mask = _SCHEME_MASKS.get(match.group(1).lower()) if match else None
        if mask is not None:
            return mask(text)
    return _mask_url(text, nested=False)


def _mask_url(text: str, nested: bool) -> str:
    if "@" not in text and "?" not in text:
        return text  # nothing to mask: the common case, kept cheap
    if "@" in text and _BLANK_OR_QUOTE.search(text):
        return _mask_everything_before_the_last_at(text)
    try:
        parts = parse.urlsplit(text)
        query = parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return _mask_everything_before_the_last_at(text)
    if "@" not in parts.netloc and "@" in text.split("?", 1)[0].split("#", 1)[0]:
        # A '/' in the password: everything up to the last '@' may be secret.
        return _mask_all(_SLASHED_USERINFO.sub(rf"\g<scheme>{MASK}@", text, count=1))
    # Values are masked decoded: a subscriber URL in a zaqar:// query
    # carries its own (percent-encoded) userinfo, and is masked as a URL (its
    # password may hold a '/' or a blank). One level only: a URL nested in a
    # URL nested in a URL is masked up to its last '@'.
    masked = [(k, MASK if _SECRET_KEYS.search(k) else _mask_value(v, nested)) for k, v in query]
    if masked != query:
        original = text
        text = parse.urlunsplit(parts._replace(query=parse.urlencode(masked, safe="*:/@")))
        if not parts.netloc and original.startswith(f"{parts.scheme}://"):
            text = text.replace(f"{parts.scheme}:", f"{parts.scheme}://", 1)
    return _mask_all(text)


def _mask_value(value: str, nested: bool) -> str:
    if "@" not in value:
        return _mask_all(value)
    if nested:
        return _mask_everything_before_the_last_at(value)
    return _mask_url(value, nested=True)


def _mask_everything_before_the_last_at(text: str) -> str:
    return mask_text(_ANY_USERINFO.sub(rf"\g<scheme>{MASK}@", text, count=1))


# What urllib's parser says of a URL it cannot read, without the URL: its
# messages quote the authority, password included.
_PARSER_ERRORS = tuple(
    (re.compile(pattern, re.DOTALL), cause)
    for pattern, cause in (
        (
            r"netloc '.*' contains invalid characters under NFKC normalization",
            "the authority holds characters that NFKC normalization makes delimiters",
        ),
        (
            r"'.*' does not appear to be an IPv4 or IPv6 address",
            "the host in brackets is not an IP address",
        ),
        (r"IPvFuture address is invalid", "the host in brackets is not an IP address"),
        (r"Invalid IPv6 URL", "unbalanced brackets in the authority"),
        (r"Port could not be cast to integer value as '.*'", "invalid port"),
        (r"Port out of range 0-65535", "invalid port"),
    )
)


def url_error(exc: Exception) -> str:
    """The cause of urllib's parse error, quoting nothing of the URL."""
    text = str(exc)
    for pattern, cause in _PARSER_ERRORS:
        if pattern.fullmatch(text):
            return cause
    return f"not a URL ({type(exc).__name__})"


def mask_text(text: str) -> str:
    """Mask URL passwords and key=value secrets in free text."""
    return strutils.mask_password(_mask_all(text), secret=MASK)


class MaskingFilter(logging.Filter):
    """Rewrite any log record so that no URL password survives, at any level,
    and no control character either (tracebacks, formatted apart, keep theirs).

    ``mask`` replaces the default rules for filters with secrets of their own
    to hide (the Keystone trust ids in keystoneauth's token dumps).
    """

    def __init__(self, mask: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.mask = mask or _mask_all

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logging's problem, not ours
            return True
        masked = escape_control(self.mask(message))
        if masked != message:
            record.msg = masked
            record.args = None
        return True


def install_log_filter() -> None:
    """Attach MaskingFilter to every handler of the root logger."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())


def mask_logger(name: str, mask: Callable[[str], str]) -> None:
    """Pass every line of one library logger through ``mask`` (installed once)."""
    logger = logging.getLogger(name)
    if not any(getattr(f, "mask", None) is mask for f in logger.filters):
        logger.addFilter(MaskingFilter(mask))
