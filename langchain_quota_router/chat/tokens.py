"""Prompt token estimates for admission: counted offline, never low, calibrated per route.

The ledger admits a call only if the route's token limits have room for the prompt
plus the output budget, so the prompt estimate must not come in low: a call admitted
on a low estimate into a nearly full window is refused by the vendor (a 429 on a
route the ledger thought had room). :class:`TokenEstimator` makes the estimate in
two steps:

1. :meth:`~TokenEstimator.count` counts the prompt (messages and tool schemas) with
   the best counter available offline: tiktoken's ``cl100k_base`` or ``o200k_base``
   BPE if its file is already in tiktoken's cache (never downloaded from here), or
   else a conservative count by character class that does not fall below
   ``cl100k_base`` on English, code, JSON or Chinese text.
2. :meth:`~TokenEstimator.for_route` turns that count into the route's estimate: a
   line ``slope * raw + offset`` fitted over the last reports of the route's vendor
   (:meth:`~TokenEstimator.observe`) so that it stays above all of them, plus a
   margin. A route with no reports yet gets the conservative bound and room for a
   preamble the vendor may add.

The router calls ``count`` once per call, ``for_route`` per candidate route and
``observe`` when the vendor's usage comes back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

if TYPE_CHECKING:
    import tiktoken

__all__ = ["Calibration", "TokenEstimator", "cached_tiktoken_encoding", "load_tiktoken_file"]


class BpeTokenizer(Protocol):
    """A BPE tokenizer as tiktoken shapes one: only ``encode_ordinary`` is used."""

    def encode_ordinary(self, text: str) -> list[int]:
        """The token ids of ``text``, special-token markers counted as plain text."""
        ...


# --------------------------------------------------------------- the framing

#: Tokens a chat format spends around each message (OpenAI's: 3, or 4 with a name).
PER_MESSAGE_TOKENS = 4
#: Tokens that prime the reply (OpenAI's ``<|start|>assistant<|message|>``).
REPLY_TOKENS = 3
#: An image, audio clip or file block: vendors bill these by size and detail, which
#: the message does not say; OpenAI charges 765 for a 1024x1024 image at high detail.
MEDIA_TOKENS = 1_000
_MEDIA_BLOCKS = frozenset(
    {"image", "image_url", "input_image", "audio", "input_audio", "file", "video", "media"}
)

# ------------------------------------------------------ the conservative count
#
# Each "view" maps every UTF-8 byte of the text to a class letter, so that one
# bytes.count finds a feature at C speed (a Python regex over the text costs five
# times as much). A pattern's weight is the tokens one occurrence costs. The weights
# were fitted as an upper bound on cl100k_base (the least frugal of the current
# vendor tokenizers on code and Chinese) over English, code, JSON, Chinese and
# mixed samples; tests/test_tokens.py checks the bound on samples of its own.


def _view(classes: dict[bytes, str], default: str = " ") -> bytes:
    table = bytearray(default.encode() * 256)
    for members, letter in classes.items():
        for byte in members:
            table[byte] = ord(letter)
    return bytes(table)


_LOWER = bytes(range(ord("a"), ord("z") + 1))
_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_DIGITS = bytes(range(ord("0"), ord("9") + 1))
_PUNCT = bytes(c for c in range(33, 127) if not chr(c).isalnum())

_VIEWS: tuple[tuple[bytes, tuple[tuple[bytes, float], ...]], ...] = (
    # A word costs one token, and long or rare words split: 1.25 more per 6 letters.
    (_view({_LOWER + _UPPER: "a"}), ((b" a", 1.0), (b"aaaaaa", 1.25))),
    # camelCase identifiers split at their humps.
    (_view({_LOWER: "a", _UPPER: "A"}), ((b"aA", 0.5),)),
    # Numbers split into groups of up to 3 digits, and a space before a number is a
    # token of its own (a space before a word is not).
    (_view({_DIGITS: "0", b" ": "s"}, "."), ((b".0", 1.5), (b"s0", 2.5), (b"000", 0.5))),
    # Punctuation merges into runs (`":"`, `});`), so a run costs less than its chars.
    (_view({_PUNCT: "."}), ((b" .", 0.6), (b".", 0.25))),
    # Line breaks, and the indentation that follows them.
    (
        _view({b"\n\r": "n", b"\t": "t", b" ": "s"}, "."),
        ((b".n", 0.8), (b"sn", 0.8), (b"tn", 0.8), (b"ns", 1.5), (b"nt", 1.5)),
    ),
)

# Beyond ASCII, the lead byte of a UTF-8 sequence says the script's block.
_NON_ASCII_VIEW = _view(
    {
        bytes(range(0xC2, 0xCC)): "l",  # Latin accents (é, ß): a word splits around them
        bytes(range(0xCC, 0xD0)) + bytes(range(0xD5, 0xE0)): "b",  # Greek, Hebrew, Arabic
        bytes(range(0xD0, 0xD5)): "y",  # Cyrillic: cl100k has many Cyrillic merges
        bytes(range(0xE0, 0xF0)): "c",  # 3 bytes: CJK, kana, Hangul, Indic, Thai
        bytes(range(0xF0, 0x100)): "d",  # 4 bytes: emoji, rare CJK
    },
    ".",
)
_NON_ASCII_WEIGHTS = ((b"l", 1.5), (b"b", 1.2), (b"y", 0.6), (b"d", 3.0))
# A 3-byte character cl100k_base encodes as one token costs 1; any other costs 2
# or 3 (byte pieces), 2.6 on average over the rarer ones.
_COMMON_WIDE_TOKENS = 1.0
_RARE_WIDE_TOKENS = 2.6

# The 3-byte characters (U+0800-U+FFFF) that are a token of their own in
# cl100k_base: 549 Chinese characters, 98 kana, 129 Hangul syllables, then Indic,
# Thai, Vietnamese letters and punctuation (escaped: marks and spaces among them).
# They are most of everyday Chinese text, while most of the 3755 characters of
# GB 2312 level 1 take 2 or 3 tokens; counting every character at 1 comes in low on
# technical or literary Chinese. tests/test_tokens.py rebuilds the list from the file.
_CL100K_SINGLES = (
    "一万三上下不与专业东两个中串为主么义之也书了事二于五些交产享京人亿今介从他付代以"
    "们件价任份企优会传但位体何余作你使例供価保信修倍值停像元先入全公共关其具内円册再"
    "写出击分列则初利别到制前力功加务动動包化北区十午华单南即历原去县参及友反发取变口"
    "只可台右号司合同名后向否含听启告员周命和品哈商問器四回因国图土在地场址型城基報場"
    "填增声处备复外多大天失头女好如始子字存学安宋完定实审客家容密对导将小少尔就局展山"
    "岁州工左已市布常平年并广序库应店度建开异式引张当录形影径待後得微心必志态思性总息"
    "您情意感成我或户所手打找技投报拉持指按换据排接推提播支收改放政效数整文料断新方族"
    "无日时明易星是時景更最月有服期木未本机权束条来板构析果查标样核格案检模次款止正此"
    "步歳段每比民気水求江汽没治法注活流海消清游源火点無然片版物特率环现球理生用由电男"
    "画界番登的监目直相省看県真知码确示社票私种科秒称移程稍税稿空立站章端笑符第等签简"
    "算管箱米类系素索约级线组经结给络统编网置美老考者而联能自至色节英藏行表装西要見见"
    "规视角解言計記話読计认议记论设证评试话询该详语误说请读调象责败账货购费资起超路身"
    "车转软载辑输达过运近还这进连述退送选通速造連道邮部都配释里重量金钟钮链销错键长開"
    "間関门闭问间队阳陆限院除雅集雷需非面音页项预频题额首验高黑"
    "あいうえおかがきくけこごさざしじすせそただちっつてでとどなにのはばまみめもやよら"
    "りるれろわをんアィイウェエオカキクグコサシジスズセタダチッテデトドナニバパビピフ"
    "ブプペポマムメャュョラリルレロン・ー"
    "가간값개거게결경고공과구그글기나내는능니다당대도동되된드든들디라래러력로록료류른"
    "를름리만메면명목문미버번보복부분비사산상색생서성세션소수스습시식신아야어에여열오"
    "와요용우운원위으은을음의이인일임입자작장재적전정제져조주지진째체출치크태터턴트튼"
    "하한할함해호화환회"
    "\u0902\u0915\u0924\u0928\u092a\u092e\u0930\u0932\u0938\u0939\u093e\u093f\u0940\u0941"
    "\u0947\u094b\u094d\u09a8\u09b0\u09be\u09bf\u09c7\u09cd\u0bbf\u0bc1\u0bcd\u0d4d\u0e01"
    "\u0e02\u0e04\u0e07\u0e08\u0e0a\u0e13\u0e14\u0e15\u0e16\u0e17\u0e19\u0e1a\u0e1b\u0e1c"
    "\u0e1e\u0e21\u0e22\u0e23\u0e25\u0e27\u0e2a\u0e2b\u0e2d\u0e30\u0e31\u0e32\u0e33\u0e34"
    "\u0e35\u0e37\u0e38\u0e39\u0e40\u0e41\u0e43\u0e44\u0e47\u0e48\u0e49\u0e4c\u17b6\u1ea1"
    "\u1ea3\u1ea5\u1ea7\u1ea9\u1ead\u1eaf\u1eb7\u1ebf\u1ec1\u1ec3\u1ec7\u1ec9\u1ecb\u1ecd"
    "\u1ecf\u1ed1\u1ed3\u1ed5\u1ed7\u1ed9\u1edb\u1edd\u1edf\u1ee3\u1ee5\u1ee7\u1ee9\u1eed"
    "\u1eef\u1ef1\u200b\u200c\u200e\u2010\u2011\u2013\u2014\u2015\u2018\u2019\u201a\u201c"
    "\u201d\u201e\u2020\u2022\u2026\u2030\u2032\u2033\u203a\u203b\u2080\u2081\u2082\u20ac"
    "\u2122\u2190\u2191\u2192\u2193\u2212\u2500\u2501\u2502\u2550\u2551\u2557\u255d\u2588"
    "\u2591\u25a0\u25ba\u25cf\u2605\u2606\u2634\u2640\u2665\u266a\u2714\u27e9\u2800\u3000"
    "\u3001\u3002\u300a\u300b\u300c\u300d\u300e\u300f\u3010\u3011\u301c\ufe0f\ufeff\uff01"
    "\uff08\uff09\uff0c\uff0d\uff0e\uff0f\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17"
    "\uff18\uff19\uff1a\uff1b\uff1e\uff1f\uff3e\uff5e\uff65\uffe5\ufffd"
)
# Runs, not single characters: findall then returns few strings for Chinese text.
_CL100K_SINGLE_RUNS = re.compile("[" + re.escape(_CL100K_SINGLES) + "]+")


def conservative_count(text: str) -> float:
    """Tokens ``text`` costs at most, by character class (no tokenizer needed).

    At or above ``cl100k_base`` on English, code, JSON and Chinese text, by 15-40 %
    for most texts; text made of rare characters only (CJK extensions, base64,
    non-English Latin-script words) can still come in above it, which per-route
    calibration then corrects.
    """
    if not text:
        return 0.0
    data = b" " + text.encode("utf-8", "surrogatepass")
    # Every text starts a token: a short fragment ("ou.") is never free.
    tokens = 1.0
    for table, patterns in _VIEWS:
        view = data.translate(table)
        for pattern, weight in patterns:
            tokens += weight * view.count(pattern)
    if not text.isascii():
        view = data.translate(_NON_ASCII_VIEW)
        for pattern, weight in _NON_ASCII_WEIGHTS:
            tokens += weight * view.count(pattern)
        wide = view.count(b"c")
        if wide:
            common = sum(map(len, _CL100K_SINGLE_RUNS.findall(text)))
            tokens += _COMMON_WIDE_TOKENS * common + _RARE_WIDE_TOKENS * (wide - common)
    return tokens


# ------------------------------------------------------------- tiktoken files


@dataclass(frozen=True)
class _TiktokenSpec:
    url: str
    sha256: str
    pattern: str
    special_tokens: dict[str, int]
    #: How far above this BPE's count a vendor's may be before calibration: cl100k
    #: is the reference; o200k counts Chinese and code in up to a third fewer tokens.
    prior: float


_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# Copied from tiktoken_ext.openai_public: calling its constructors would download.
TIKTOKEN_FILES: dict[str, _TiktokenSpec] = {
    "cl100k_base": _TiktokenSpec(
        url="https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pattern=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
            r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        special_tokens={
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
        prior=1.1,
    ),
    "o200k_base": _TiktokenSpec(
        url="https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pattern=_O200K_PATTERN,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
        prior=1.5,
    ),
}


def load_tiktoken_file(
    path: str | os.PathLike[str], name: str = "cl100k_base"
) -> tiktoken.Encoding:
    """Build a tiktoken encoding from a local ``.tiktoken`` file, without the network.

    ``tiktoken.get_encoding`` downloads a missing file and copies local ones into
    its cache; this reads the file, checks its hash and builds the encoding itself.

    Args:
        path: a ``cl100k_base.tiktoken`` or ``o200k_base.tiktoken`` file.
        name: which of the two it is (its split pattern and hash are known here).

    Raises:
        ValueError: the file is not the published ``name`` file.
        ImportError: tiktoken is not installed.
    """
    import tiktoken

    spec = TIKTOKEN_FILES[name]
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        msg = f"{os.fspath(path)} is not the published {name} file (its hash differs)"
        raise ValueError(msg)
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name, pat_str=spec.pattern, mergeable_ranks=ranks, special_tokens=spec.special_tokens
    )


def tiktoken_cache_dir() -> Path | None:
    """Where tiktoken keeps downloaded files, as tiktoken.load decides it.

    ``None`` when ``TIKTOKEN_CACHE_DIR`` is set empty (tiktoken then caches nothing).
    """
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            folder = os.environ[variable]
            return Path(folder) if folder else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def cached_tiktoken_encoding() -> tuple[str, tiktoken.Encoding] | None:
    """A ``cl100k_base`` or ``o200k_base`` encoding from tiktoken's cache, if there.

    Never downloads: a file counts only if it is already cached and has the published
    hash. Returns ``(name, encoding)``, preferring cl100k_base (the reference the
    conservative count is fitted to), or ``None``.
    """
    try:
        import tiktoken  # noqa: F401 - only to know it is there
    except ImportError:
        return None
    folder = tiktoken_cache_dir()
    if folder is None:
        return None
    for name, spec in TIKTOKEN_FILES.items():
        # tiktoken names a cached file by the SHA-1 of its URL.
        path = folder / hashlib.sha1(spec.url.encode(), usedforsecurity=False).hexdigest()
        if not path.is_file():
            continue
        try:
            return name, load_tiktoken_file(path, name)
        except (OSError, ValueError):
            continue  # a half-written or foreign file: tiktoken would fetch it again
    return None


# ------------------------------------------------------------- the estimator


@dataclass(frozen=True)
class Calibration:
    """What a route's vendor has taught the estimator: it counts at most about
    ``slope * raw + offset`` tokens for a prompt counted ``raw``.

    Attributes:
        slope: the vendor's tokens per counted token: the highest ratio among recent
            large prompts, drawn toward the conservative bound while they are few.
        offset: tokens the vendor adds to every prompt (its own system prompt, chat
            template), at least what keeps the line above every recent report.
        observations: how many reports this rests on (at most ``window``).
    """

    slope: float
    offset: float
    observations: int


# The slope is learned from prompts this large (a preamble is a small part of them);
# a prompt under _SMALL_PROMPT shows whether the vendor adds one.
_LARGE_PROMPT = 256
_SMALL_PROMPT = 128
# A preamble as large as chat templates and vendors' own system prompts come (Llama's
# and gpt-oss's run to a few dozen tokens), assumed until reports show otherwise.
_ASSUMED_PREAMBLE = 64
_SLOPE_RANGE = (0.25, 4.0)
# Once the history is full, one in this many reports the fit already bounds is taken.
_CONFIRM_EVERY = 8
# Reports that count as much as the conservative bound while few have come in.
_SHRINK = 2


class _RouteHistory:
    """Recent (counted, reported) pairs of one route and the calibration they give."""

    def __init__(self, window: int) -> None:
        self.pairs: deque[tuple[int, int]] = deque(maxlen=window)
        self.calibration: Calibration | None = None
        self.confirmed = 0

    def add(self, raw: int, reported: int, prior: float) -> None:
        pairs = self.pairs
        pairs.append((raw, reported))
        small = [(raw, rep) for raw, rep in pairs if raw < _SMALL_PROMPT]
        large = [(raw, rep) for raw, rep in pairs if raw >= _LARGE_PROMPT]
        preamble = 0.0
        if large:
            if small:
                # Where the vendor's least-squares line meets zero: a preamble it adds
                # to every call (its chat template, a system prompt of its own).
                preamble = min(max(0.0, _intercept(pairs)), 4 * _ASSUMED_PREAMBLE)
            slope = max((rep - preamble) / raw for raw, rep in large)
            if slope < prior:
                # A few reports cannot show the range of a route's prompts (code,
                # Chinese, JSON count differently): trust them in proportion to their
                # number. Two reports close half the gap to the conservative bound.
                slope += (prior - slope) * _SHRINK / (len(large) + _SHRINK)
        else:
            slope = max(prior, *((rep - _ASSUMED_PREAMBLE) / raw for raw, rep in pairs))
        slope = min(max(slope, _SLOPE_RANGE[0]), _SLOPE_RANGE[1])
        offset = max(preamble, *(rep - slope * raw for raw, rep in pairs))
        if not small:
            # Larger prompts cannot tell a preamble from the slope: until a small one
            # is reported, assume the vendor adds one.
            offset = max(offset, _ASSUMED_PREAMBLE)
        self.calibration = Calibration(slope, offset, len(pairs))


def _intercept(pairs: Iterable[tuple[int, int]]) -> float:
    """The intercept of the least-squares line through ``pairs``."""
    points = list(pairs)
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return mean_y - slope * mean_x


class TokenEstimator:
    """Counts prompts offline and learns, per route, what each vendor really counts.

    Thread-safe; one per router (calibration is keyed by route name, and lives in
    memory: a new process starts from the conservative bound).

    Args:
        encoding: a BPE tokenizer with ``encode_ordinary`` (a ``tiktoken.Encoding``),
            ``None`` for the conservative count, or ``"auto"``: tiktoken's cached
            ``cl100k_base``/``o200k_base`` if present, else the conservative count.
            Chosen at the first count and kept, since learned ratios are relative to it.
        window: how many recent vendor reports per route calibration rests on.
        margin: the fraction added to the scaled count.
        pad: tokens added to every estimate (rounding, a vendor's odd extra token).
    """

    def __init__(
        self,
        encoding: BpeTokenizer | Literal["auto"] | None = "auto",
        *,
        window: int = 32,
        margin: float = 0.05,
        pad: int = 8,
    ) -> None:
        if window < 1:
            msg = "window must be at least 1"
            raise ValueError(msg)
        if margin < 0 or pad < 0:
            msg = "margin and pad must not be negative"
            raise ValueError(msg)
        self.window = window
        self.margin = margin
        self.pad = pad
        self._lock = threading.Lock()
        self._histories: dict[str, _RouteHistory] = {}
        self._tool_tokens: dict[int, tuple[object, float]] = {}
        #: Texts counted lately, and their characters in all (see _text_count).
        self._texts: dict[str, float] = {}
        self._texts_chars = 0
        self._choice = encoding
        self._text_tokens: Callable[[str], float] | None = None
        self._prior = 1.0
        self._counter = ""
        if encoding != "auto":
            self._resolve()

    # ------------------------------------------------------------- counting

    @property
    def counter(self) -> str:
        """Which counter raw counts come from (resolving ``"auto"`` if not yet done)."""
        if self._text_tokens is None:
            self._resolve()
        return self._counter

    def _resolve(self) -> Callable[[str], float]:
        with self._lock:
            if self._text_tokens is not None:
                return self._text_tokens
            choice = self._choice
            found = cached_tiktoken_encoding() if choice == "auto" else None
            text_tokens: Callable[[str], float]
            if found is not None:
                name, encoding = found
                text_tokens = _bpe_counter(encoding)
                self._counter = f"{name} BPE (tiktoken cache)"
                self._prior = TIKTOKEN_FILES[name].prior
            elif choice is None or choice == "auto":
                text_tokens = conservative_count
                self._counter = "conservative count by character class"
            else:
                text_tokens = _bpe_counter(choice)
                self._counter = f"{getattr(choice, 'name', type(choice).__name__)} BPE"
                self._prior = TIKTOKEN_FILES["cl100k_base"].prior
            # Last: other threads read it without the lock, and then the prior.
            self._text_tokens = text_tokens
            return text_tokens

    def count_text(self, text: str) -> int:
        """Raw tokens of one string (no message framing)."""
        count = self._text_tokens or self._resolve()
        return math.ceil(count(text))

    def count(self, messages: Sequence[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Raw prompt tokens of a call: messages, their framing and tool schemas.

        Offline and cheap (tens of microseconds for a few short messages with the
        conservative count). The figure is relative to this estimator's counter:
        pass it to :meth:`for_route` and :meth:`observe`, not to a ledger directly.
        """
        text_tokens = self._text_tokens or self._resolve()
        total = float(REPLY_TOKENS)
        for message in messages:
            total += PER_MESSAGE_TOKENS
            content = message.content
            if isinstance(content, str):
                total += self._text_count(content, text_tokens)
            else:
                total += _content_tokens(content, text_tokens)
            if message.name:
                total += text_tokens(message.name)
            if isinstance(message, AIMessage) and message.tool_calls:
                for call in message.tool_calls:
                    total += text_tokens(call["name"]) + text_tokens(_dumps(call["args"]))
                    total += PER_MESSAGE_TOKENS
            elif isinstance(message, ToolMessage):
                total += text_tokens(message.tool_call_id)
        if tools:
            total += self._tools(tools, text_tokens)
        return math.ceil(total)

    def _text_count(self, text: str, text_tokens: Callable[[str], float]) -> float:
        """``text_tokens(text)``, remembered: a conversation sends the same messages
        again on every turn (and the counter never changes once chosen)."""
        known = self._texts.get(text)
        if known is None:
            known = text_tokens(text)
            if self._texts_chars + len(text) > _KNOWN_TEXT_CHARS or len(self._texts) >= 4096:
                self._texts = {}
                self._texts_chars = 0
            self._texts[text] = known
            self._texts_chars += len(text)
        return known

    def _tools(self, tools: Sequence[Any], text_tokens: Callable[[str], float]) -> float:
        from langchain_core.utils.function_calling import convert_to_openai_tool

        total = 0.0
        cache = self._tool_tokens
        for tool in tools:
            # Bound tools are the same objects call after call, and converting a
            # BaseTool builds its JSON schema (slow): remember their counts. A dict may
            # be edited in place, so it is counted afresh.
            known = None if isinstance(tool, dict) else cache.get(id(tool))
            if known is not None and known[0] is tool:
                total += known[1]
                continue
            try:
                schema: object = convert_to_openai_tool(tool)
            except Exception:  # noqa: BLE001 - an odd tool shape only costs accuracy
                schema = repr(tool)
            tokens = text_tokens(schema if isinstance(schema, str) else _dumps(schema))
            if not isinstance(tool, dict):
                if len(cache) >= 1024:
                    cache.clear()
                cache[id(tool)] = (tool, tokens)
            total += tokens
        return total

    # ----------------------------------------------------------- calibration

    def for_route(self, route: str, raw: int) -> int:
        """Prompt tokens to reserve on ``route`` for a prompt counted ``raw``.

        Uncalibrated: the conservative bound (the raw count times the counter's prior,
        1 for the conservative count) plus the margin and an assumed preamble.
        Calibrated: ``slope * raw`` plus the margin, plus the offset (see
        :class:`Calibration`). Always plus ``pad``.
        """
        if self._text_tokens is None:
            self._resolve()
        history = self._histories.get(route)
        calibration = history.calibration if history is not None else None
        if calibration is None:
            estimate = raw * self._prior * (1 + self.margin) + _ASSUMED_PREAMBLE
        else:
            estimate = raw * calibration.slope * (1 + self.margin) + calibration.offset
        return math.ceil(estimate) + self.pad

    def expected(self, route: str, raw: int) -> int:
        """Prompt tokens ``route`` will most likely count for a prompt counted ``raw``:
        its calibrated line (or, before it has one, the median of the other routes'
        lines), without :meth:`for_route`'s safety margin, assumed preamble and pad.
        What comparing routes by cost needs (a route not yet calibrated must not look
        dearer for want of observations); what is reserved stays :meth:`for_route`'s."""
        if self._text_tokens is None:
            self._resolve()
        history = self._histories.get(route)
        calibration = history.calibration if history is not None else None
        if calibration is not None:
            return max(0, math.ceil(raw * calibration.slope + calibration.offset))
        # Not calibrated yet: what the calibrated routes make of such a prompt is a
        # better guess than the raw count (whose framing overcounts short prompts).
        lines = [h.calibration for h in self._histories.values() if h.calibration is not None]
        if not lines:
            return math.ceil(raw * self._prior)
        guesses = sorted(raw * line.slope + line.offset for line in lines)
        return max(0, math.ceil(guesses[len(guesses) // 2]))

    def observe(self, route: str, raw: int, reported_input_tokens: int) -> None:
        """Learn from a vendor's report: it counted ``reported_input_tokens`` for ``raw``.

        Reports of zero (a vendor that reports nothing, a cached answer) are ignored.
        """
        if raw <= 0 or reported_input_tokens <= 0:
            return
        if self._text_tokens is None:
            self._resolve()
        with self._lock:
            history = self._histories.get(route)
            if history is None:
                history = self._histories[route] = _RouteHistory(self.window)
            known = history.calibration
            if (
                known is not None
                and known.observations >= self.window
                and known.slope * raw + known.offset >= reported_input_tokens
            ):
                # A full history that already bounds this report: refitting on every
                # call costs more than the call's own routing. Take one in
                # _CONFIRM_EVERY, so the fit still follows a vendor that counts less.
                history.confirmed += 1
                if history.confirmed % _CONFIRM_EVERY:
                    return
            history.add(raw, int(reported_input_tokens), self._prior)

    def calibration(self, route: str) -> Calibration | None:
        """What ``route``'s reports have taught so far (``None`` before any)."""
        history = self._histories.get(route)
        return history.calibration if history is not None else None


#: The most characters of message texts an estimator remembers the counts of.
_KNOWN_TEXT_CHARS = 4_000_000


def _bpe_counter(encoding: BpeTokenizer) -> Callable[[str], float]:
    encode = encoding.encode_ordinary

    def bpe_tokens(text: str) -> float:
        return float(len(encode(text)))

    return bpe_tokens


def _content_tokens(content: object, text_tokens: Callable[[str], float]) -> float:
    if isinstance(content, str):
        return text_tokens(content)
    if not isinstance(content, list):
        return text_tokens(repr(content))
    total = 0.0
    for block in content:
        if isinstance(block, str):
            total += text_tokens(block)
        elif isinstance(block, dict):
            kind = block.get("type")
            if kind in _MEDIA_BLOCKS:
                total += MEDIA_TOKENS
            elif isinstance(block.get("text"), str):
                total += text_tokens(block["text"])
            else:
                total += text_tokens(_dumps(block))
        else:
            total += text_tokens(repr(block))
    return total


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
