"""The ``quota-router`` command line.

==========================================  ==========================================
``quota-router status``                     one line per route: tightest limit, bar,
                                            reset time, state
``quota-router report [--json|--csv]``      every pool and limit, holds, lifespan,
``[--export FILE] [--avg-tokens N]``        the fleet's counters; ``--export`` picks
                                            the format by extension
``quota-router report --history``           each pool's use over time (the rows of
``[--since 24h] [--step 10m] [--csv]``      ``router.history()``; ``--csv`` to export)
``quota-router reset ROUTE_OR_POOL``        forget a pool's usage and lift its block
``quota-router enable ROUTE``               use a route again: its key after a 401/403,
                                            its model after a model-not-found
``quota-router doctor [--json]``            is every route usable? key, model served,
                                            catalog age, learned limits; no completion
``quota-router chat "prompt" [--route R]``  one real call; says which route answered
``quota-router simulate --port N``          the local vendor simulator
``quota-router demo [--seconds S]``         a simulated day over four vendors
``quota-router serve [--port N]``           the status page on uvicorn (``web`` extra);
``[--allow-host NAME]``                     prints the admin token reset/enable need
``quota-router proxy [--port 4000]``        an OpenAI-compatible endpoint over the
``[--host H] [--workers N]``                router (``proxy`` and ``web`` extras)
==========================================  ==========================================

Every command that needs a router builds it from ``--config FILE`` (TOML), else the
file named by ``$QUOTA_ROUTER_CONFIG``, else the environment (``GROQ_API_KEY``, ...),
and reads the same ledger the library writes. Mistakes print one line on stderr and
exit 2 (configuration) or 1 (runtime); API keys are never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from langchain_quota_router._errors import (
    ConfigurationError,
    LedgerError,
    QuotaExhaustedError,
    QuotaRouterError,
)
from langchain_quota_router.cli import _report
from langchain_quota_router.quota.book import match_name
from langchain_quota_router.quota.ledger import LEDGER_ENV, open_ledger
from langchain_quota_router.quota.secrets import Masker, mask

if TYPE_CHECKING:
    from langchain_quota_router.chat.model import QuotaRoutedChatModel

__all__ = ["CONFIG_ENV", "main"]

CONFIG_ENV = "QUOTA_ROUTER_CONFIG"
ADMIN_TOKEN_ENV = "QUOTA_ROUTER_ADMIN_TOKEN"  # noqa: S105 - a variable's name (web.ADMIN_TOKEN_ENV)
"""The environment variable naming a TOML config file when ``--config`` is not given."""

_EXPORT_FORMATS = {".json": "json", ".csv": "csv", ".txt": "text"}


class CliError(Exception):
    """A mistake to report in one line, with the exit code to leave with."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _load_router(config: str | None) -> QuotaRoutedChatModel:
    """The router a command works on: ``--config``, ``$QUOTA_ROUTER_CONFIG``, else env.

    Tests replace this function to hand commands a router of their own.
    """
    from langchain_quota_router.chat.model import QuotaRoutedChatModel

    path = config or os.environ.get(CONFIG_ENV)
    if path:
        if not Path(path).is_file():
            source = "--config" if config else f"${CONFIG_ENV}"
            msg = f"config file {path} ({source}) does not exist"
            raise ConfigurationError(msg)
        from_config = getattr(QuotaRoutedChatModel, "from_config", None)
        if from_config is None:
            msg = "this version cannot read config files (QuotaRoutedChatModel.from_config)"
            raise CliError(msg)
        return cast("QuotaRoutedChatModel", from_config(path))
    from_env = getattr(QuotaRoutedChatModel, "from_env", None)
    if from_env is None:
        msg = "this version cannot read keys from the environment; pass --config FILE"
        raise CliError(msg)
    return cast("QuotaRoutedChatModel", from_env())


def _router(args: argparse.Namespace) -> QuotaRoutedChatModel:
    # Looked up through the module so a test's replacement of _load_router is used.
    return _load_router(args.config)


class _Output:
    """Writes to stdout with every known key and key-shaped string masked."""

    def __init__(self, masked: Masker | None = None) -> None:
        self.masked = masked or Masker()

    @classmethod
    def of(cls, router: QuotaRoutedChatModel) -> _Output:
        """Output that masks ``router``'s keys."""
        return cls(Masker.for_router(router))

    def __call__(self, text: str = "", *, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        stream.write(self.masked(text) + "\n")


# ---------------------------------------------------------------- commands


def _ledger_first(args: argparse.Namespace) -> None:
    """Open the ledger a command will read before building the router (which loads
    LangChain and every vendor class, seconds on a small machine): a ledger file
    that is truncated, replaced or locked is reported at once.

    Raises:
        LedgerError: the ledger cannot be read, naming it.
    """
    path = args.config or os.environ.get(CONFIG_ENV)
    url: Any = None
    if path and Path(path).is_file():
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - exercised on Python 3.10 only
            import tomli as tomllib  # a dependency on Python 3.10
        with contextlib.suppress(OSError, ValueError):
            url = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("ledger")
    elif not path:
        url = os.environ.get(LEDGER_ENV)
    if not isinstance(url, str) or not url.startswith("sqlite"):
        return  # the router opens it: a server, memory, or a file named elsewhere
    ledger = open_ledger(url)
    try:
        ledger.holds(0.0)
    finally:
        ledger.close()


def _cmd_status(args: argparse.Namespace) -> int:
    _ledger_first(args)
    router = _router(args)
    _Output.of(router)(_report.status_text(router))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    if not args.history and (args.since is not None or args.step is not None):
        msg = "--since and --step go with --history"
        raise CliError(msg)
    if args.history and args.avg_tokens is not None:
        msg = "--avg-tokens does not go with --history"
        raise CliError(msg)
    if args.avg_tokens is not None and args.avg_tokens <= 0:
        msg = f"--avg-tokens must be a positive number of tokens per day, got {args.avg_tokens}"
        raise CliError(msg)
    kind = "json" if args.json else "csv" if args.csv else "text"
    if args.export is not None:
        suffix = Path(args.export).suffix.lower()
        if suffix not in _EXPORT_FORMATS:
            known = ", ".join(_EXPORT_FORMATS)
            msg = f"--export {args.export}: the extension must be one of {known}"
            raise CliError(msg)
        kind = _EXPORT_FORMATS[suffix]
    since = None if args.since is None else _since(args.since)
    step = None if args.step is None else _span(args.step, "--step")
    _ledger_first(args)
    router = _router(args)
    if args.history:
        try:
            rows = router.history(since=since, step=step)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        show: dict[str, Callable[[list[dict[str, Any]]], str]] = {
            "json": _report.history_json,
            "csv": _report.history_csv,
            "text": _report.history_text,
        }
        text = Masker.for_router(router)(show[kind](rows))
    else:
        data = _report.report_data(router, args.avg_tokens)
        render: dict[str, Callable[[dict[str, Any]], str]] = {
            "json": _report.report_json,
            "csv": _report.report_csv,
            "text": _report.report_text,
        }
        text = Masker.for_router(router)(render[kind](data))
    if args.export is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    try:
        Path(args.export).write_text(text if text.endswith("\n") else text + "\n", "utf-8")
    except OSError as exc:
        msg = f"cannot write {args.export}: {exc.strerror or exc}"
        raise CliError(msg, 1) from None
    _Output()(f"report written to {args.export} ({kind})")
    return 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _span(text: str, option: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``6h`` or ``7d``."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], 0)
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        msg = f"{option} {text}: give a span such as 90s, 15m, 6h or 7d"
        raise CliError(msg)
    return seconds


def _since(text: str) -> dt.timedelta | dt.datetime:
    """``--since``: a span back from now (``24h``), or a time (``2026-01-01T08:00``)."""
    try:
        return dt.timedelta(seconds=_span(text, "--since"))
    except CliError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        msg = f"--since {text}: give a span back from now (24h, 7d) or an ISO time"
        raise CliError(msg) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from langchain_quota_router.cli.doctor import check_router, doctor_table

    if args.max_age_days < 0:
        msg = f"--max-age-days must not be negative, got {args.max_age_days}"
        raise CliError(msg)
    router = _router(args)
    checks = check_router(router, max_age_days=args.max_age_days)
    out = _Output.of(router)
    if args.json:
        out(json.dumps([check.as_dict() for check in checks], indent=2))
    else:
        out(doctor_table(checks))
    return 0 if all(check.usable for check in checks) else 1


def _cmd_reset(args: argparse.Namespace) -> int:
    router = _router(args)
    name = args.name
    route = match_name(name, router.route_map)
    pool_name = match_name(name, router.pool_limits)
    if route is not None:
        pool = router.route_map[route].pool
    elif pool_name is not None:
        pool = pool_name
    else:
        msg = (
            f"no route or pool named {name!r}; routes: {', '.join(router.route_map)}; "
            f"pools: {', '.join(router.pool_limits)}"
        )
        raise CliError(msg)
    router.ledger_backend.reset(pool)
    routes = ", ".join(r.name for r in router.routes if r.pool == pool)
    _Output.of(router)(
        f"reset pool {pool} (routes: {routes}): its usage is forgotten and any block lifted"
    )
    return 0


def _cmd_enable(args: argparse.Namespace) -> int:
    router = _router(args)
    lifted = router.enable(args.route)  # ConfigurationError names the routes when unknown
    # The route's own name, not what was typed ("groq#1 ...a1f3", a prefix).
    name = match_name(args.route, router.route_map) or args.route
    if lifted:
        _Output.of(router)(f"enabled {name}: its key and model may be used again")
    else:
        _Output.of(router)(f"{name} was not disabled; nothing to do")
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    router = _router(args)
    out = _Output.of(router)
    if args.route is not None and args.route not in router.route_map:
        msg = f"no route named {args.route!r}; routes: {', '.join(router.route_map)}"
        raise CliError(msg)
    kwargs: dict[str, Any] = {} if args.route is None else {"preferred": args.route}
    try:
        message = router.invoke(args.prompt, **kwargs)
    except QuotaRouterError:
        raise
    except Exception as exc:  # noqa: BLE001 - a vendor's own error, reported in one line
        text = " ".join(str(exc).split()) or type(exc).__name__
        msg = f"the vendor refused the call: {type(exc).__name__}: {text}"
        raise CliError(out.masked(msg), 1) from None
    out(message.text)
    meta = message.response_metadata
    served = f"served by {meta.get('route', '?')} ({meta.get('model_name', '?')})"
    if meta.get("cache_hit"):
        served += ", from the cache"
    out(f"-- {served}", err=True)
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from langchain_quota_router.simulator import main as simulator_main

    argv = ["--host", args.host, "--port", str(args.port)]
    if args.config is not None:
        argv += ["--config", args.config]
    return simulator_main(argv)


def _cmd_demo(args: argparse.Namespace) -> int:
    from langchain_quota_router.cli.demo import run_demo

    if args.seconds <= 0:
        msg = f"--seconds must be positive, got {args.seconds}"
        raise CliError(msg)
    result = run_demo(seconds=args.seconds, out=sys.stdout, quiet=args.quiet)
    return 0 if result.failed == 0 else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from langchain_quota_router import web
    except ImportError as exc:
        msg = f"the status page is not available in this installation ({exc})"
        raise CliError(msg) from None
    serve = getattr(web, "serve", None)
    if serve is None:
        msg = "the status page is not available in this installation (web.serve is missing)"
        raise CliError(msg)
    router = _router(args)
    try:
        serve(router, host=args.host, port=args.port, allowed_hosts=args.allow_host)
    except ImportError as exc:  # the web extra (uvicorn) is missing; the message says so
        raise CliError(str(exc)) from None
    except OSError as exc:
        msg = f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}"
        raise CliError(msg, 1) from None
    return 0


def _cmd_proxy(args: argparse.Namespace) -> int:
    if args.workers < 1:
        msg = f"--workers must be at least 1, got {args.workers}"
        raise CliError(msg)
    try:
        from langchain_quota_router.proxy import server
    except ImportError as exc:
        msg = (
            "the proxy is not available in this installation "
            f"(pip install 'langchain-quota-router[proxy,web]'; {exc})"
        )
        raise CliError(msg) from None
    try:
        if args.workers > 1:
            # Each worker builds the router itself, from the same file: load it
            # here once so a mistake is reported before any worker starts.
            _router(args)
            server.serve_workers(args.config, args.host, args.port, args.workers)
        else:
            server.serve(_router(args), args.host, args.port)
    except ImportError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        msg = f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}"
        raise CliError(msg, 1) from None
    return 0


# ------------------------------------------------------------------ parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quota-router",
        description="See and manage the quota of a QuotaRoutedChatModel; run its demo.",
        epilog=(
            f"The router comes from --config FILE (TOML), else ${CONFIG_ENV}, else the "
            "environment (GROQ_API_KEY, GEMINI_API_KEY, OPENAI_API_KEY, ...)."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str) -> Any:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run)
        return sub

    def config_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config",
            metavar="FILE",
            help=f"the router's TOML file (default: ${CONFIG_ENV}, else the environment)",
        )

    sub = command("status", _cmd_status, "Compact table: each route's tightest limit and state.")
    config_option(sub)

    sub = command("report", _cmd_report, "Full report: every pool and limit, holds, lifespan.")
    config_option(sub)
    kind = sub.add_mutually_exclusive_group()
    kind.add_argument("--json", action="store_true", help="print JSON")
    kind.add_argument("--csv", action="store_true", help="print CSV (one row per pool and limit)")
    sub.add_argument(
        "--export",
        metavar="FILE",
        help="write the report to FILE; .json, .csv or .txt picks the format",
    )
    sub.add_argument(
        "--avg-tokens",
        type=int,
        metavar="N",
        help="estimate how many days each pool lasts at N tokens a day",
    )
    sub.add_argument(
        "--history",
        action="store_true",
        help="each pool's use over time, per limit (what the fleet's routers spent); "
        "with --csv one row per time, pool and limit",
    )
    sub.add_argument(
        "--since",
        metavar="WHEN",
        help="with --history: how far back, a span (24h, 7d; default 24h) or an ISO time "
        "(UTC unless it says); at most 35 days",
    )
    sub.add_argument(
        "--step",
        metavar="SPAN",
        help="with --history: time between points (90s, 15m, 1h; default: at most 240 points)",
    )

    sub = command("reset", _cmd_reset, "Forget what a route's pool has spent; lift its block.")
    sub.add_argument("name", metavar="ROUTE_OR_POOL", help="a route name or a pool name")
    config_option(sub)

    sub = command(
        "enable",
        _cmd_enable,
        "Use a route again: its key after a 401/403, its model after a model-not-found.",
    )
    sub.add_argument("route", metavar="ROUTE", help="the route's name")
    config_option(sub)

    sub = command(
        "doctor",
        _cmd_doctor,
        "Check every route without spending a completion: key accepted, model served, "
        "catalog entry current, learned limits in line. Exit 1 if a route is unusable.",
    )
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.add_argument(
        "--max-age-days",
        type=int,
        default=90,
        metavar="N",
        help="a catalog entry read more than N days ago is stale (default: 90)",
    )
    config_option(sub)

    sub = command("chat", _cmd_chat, "Send one prompt through the router; print the answer.")
    sub.add_argument("prompt", help="the prompt")
    sub.add_argument("--route", metavar="NAME", help="try this route first (still falls back)")
    config_option(sub)

    sub = command("simulate", _cmd_simulate, "Run the local vendor simulator until Ctrl+C.")
    sub.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    sub.add_argument(
        "--config", metavar="JSON", help='simulator keys: {"keys": [{"key": ..., "vendor": ...}]}'
    )

    sub = command("demo", _cmd_demo, "A simulated day over four vendors: no keys, no network.")
    sub.add_argument(
        "--seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="wall-clock budget; the workload stops early past it (default: 30)",
    )
    sub.add_argument("--quiet", action="store_true", help="print only the closing summary")

    sub = command(
        "serve",
        _cmd_serve,
        "Serve the status page (usage bars, reset, enable, /status.json, /metrics) on "
        f"uvicorn. Reset and enable need the admin token: ${ADMIN_TOKEN_ENV}, else one "
        "generated and printed at start.",
    )
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    sub.add_argument("--port", type=int, default=8765, help="TCP port (default: 8765)")
    sub.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name the page may be reached by (a proxy's); repeatable",
    )
    config_option(sub)

    sub = command(
        "proxy",
        _cmd_proxy,
        "Serve an OpenAI-compatible API (/v1/chat/completions, /v1/models, /v1/embeddings) "
        "over the router: other programs spend the same quotas. Beyond loopback, clients "
        "need a key: $QUOTA_ROUTER_PROXY_KEYS, else one generated and printed at start.",
    )
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    sub.add_argument("--port", type=int, default=4000, help="TCP port (default: 4000)")
    sub.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes, each with its own router over the same ledger (default: 1)",
    )
    config_option(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``quota-router`` command line.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when the command failed at run time (ledger,
        quota, vendor), 2 for a mistake in the command or the configuration.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except ConfigurationError as exc:
        return _fail(str(exc), 2)
    except (LedgerError, QuotaExhaustedError, QuotaRouterError) as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130


def _fail(message: str, code: int) -> int:
    line = " ".join(mask(message).split())
    sys.stderr.write(f"quota-router: error: {line}\n")
    return code
