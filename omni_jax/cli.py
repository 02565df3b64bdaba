"""What the absl entry points (`python -m omni_jax.train`, `python -m omni_jax.aot`) share before
they run: `--help` exits 0, and a config that cannot load, or a config file or override naming a
key the config does not have, is one line on stderr (exit 2) instead of a traceback from inside the
flag parser.

`check_config_args(argv, default)` returns that line (None when the arguments are fine); `run(main,
default_config=...)` checks, then hands over to `absl.app.run`.
"""

from __future__ import annotations

import difflib
import logging
import importlib.util
import os
import re
import sys

import ml_collections

HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")
USAGE_ERROR = 2


def _config_path(argv: list[str], flag: str, default: str | None) -> str | None:
    """The value of --flag (file[:variant]) in argv, else `default`."""
    value = default
    for i, arg in enumerate(argv):
        if arg == f"--{flag}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{flag}="):
            value = arg.split("=", 1)[1]
    return value


def load_config_file(spec: str):
    """`path[:variant]` → the ConfigDict its get_config(variant) returns (as config_flags loads it).
    Raises FileNotFoundError for a missing file, ValueError for a bad variant."""
    path, _, variant = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    module_spec = importlib.util.spec_from_file_location("_omni_jax_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} has no get_config(arg) function")
    return module.get_config(variant) if variant else module.get_config()


def _keys(config, prefix: str = "") -> list[str]:
    """Every dotted key of a ConfigDict, nested dicts included."""
    out = []
    for name, value in config.items():
        key = f"{prefix}{name}"
        out.append(key)
        if hasattr(value, "items"):
            out.extend(_keys(value, key + "."))
    return out


def closest_keys(key: str, keys: list[str], n: int = 3) -> list[str]:
    """The existing keys nearest to `key`: its parent's children first (an abbreviation such as
    `lr` for `learning_rate`, or a prefix, counts as a close match), then any key."""
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in keys if k.rpartition(".")[0] == parent]
    pool = siblings or keys

    def score(candidate: str) -> float:
        name = candidate.rpartition(".")[2] if siblings else candidate
        typed = leaf if siblings else key
        initials = "".join(part[:1] for part in name.split("_"))
        if typed and (initials == typed or name.startswith(typed)):
            return 2.0
        return difflib.SequenceMatcher(None, typed, name).ratio()

    return sorted(pool, key=score, reverse=True)[:n]


def _path_of(root, node, prefix: str = "") -> str | None:
    """The dotted path of `node` inside the ConfigDict `root` ("" for root itself), else None."""
    if root is node:
        return prefix
    for name, value in root.items():
        if isinstance(value, ml_collections.ConfigDict):
            found = _path_of(value, node, f"{prefix}{name}.")
            if found is not None:
                return found
    return None


def _refused_key(err: Exception) -> tuple[str, list[str]] | None:
    """(dotted key, the config's keys) when `err` is a locked ConfigDict refusing a key that a config
    file sets (`c.grpo.old_name = ...`), else None. The key's section and the whole config are read
    from the frames the error passed through: the refusing ConfigDict (`self`) and the file's own."""
    found = re.search(r'Key "([^"]+)" does not exist and cannot be added since the config is locked', str(err))
    if found is None:
        return None
    node, roots = None, []
    tb = err.__traceback__
    while tb is not None:  # outermost frame first: the innermost `self` is the refusing section
        for name, value in tb.tb_frame.f_locals.items():
            if isinstance(value, ml_collections.ConfigDict):
                if name == "self":
                    node = value
                else:
                    roots.append(value)
        tb = tb.tb_next
    if node is None:
        return found.group(1), []
    best = ("", node)  # the config that holds the section deepest: the whole config, not a section
    for root in roots:
        path = _path_of(root, node)
        if path is not None and len(path) > len(best[0]):
            best = (path, root)
    return best[0] + found.group(1), _keys(best[1])


def _unknown_key(key: str, keys: list[str]) -> str:
    near = closest_keys(key, keys)
    return f"unknown config key {key}" + (f"; closest: {', '.join(near)}" if near else "")


def check_config_args(argv: list[str], default: str | None, flag: str = "config") -> str | None:
    """What is wrong with the config arguments in argv, in one line (None when nothing is): a
    config file that is missing or fails to load (or sets a key the config does not have), or a
    `--config.a.b=...` whose key does not exist."""
    spec = _config_path(argv, flag, default)
    overrides = [a[len(flag) + 3:].split("=", 1)[0] for a in argv if a.startswith(f"--{flag}.")]
    if spec is None:
        return None
    try:
        config = load_config_file(spec)
    except FileNotFoundError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - any failure of the user's config file, said in one line
        refused = _refused_key(e) if isinstance(e, (AttributeError, KeyError)) else None
        if refused is not None:
            return f"config {spec}: " + _unknown_key(*refused)
        return f"config {spec} does not load: {type(e).__name__}: {e}"
    keys = _keys(config)
    for key in overrides:
        if key not in keys:
            return _unknown_key(key, keys)
    return None


def asked_for_help(argv: list[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv[1:])


def exit_on_bad_args(argv: list[str], *, prog: str, default_config: str | None = None) -> None:
    """One line on stderr and exit 2 if check_config_args finds a problem (nothing for --help).
    Call it before DEFINE_config_file with a default: that applies --config.* overrides at once."""
    if asked_for_help(argv):
        return
    problem = check_config_args(argv[1:], default_config)
    if problem:
        print(f"{prog}: {problem}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR)


def run(main, *, prog: str, default_config: str | None = None) -> None:
    """absl.app.run(main), after checking the config arguments (one line and exit 2 if wrong);
    `--help` exits 0 (absl's own exits 1)."""
    from absl import app

    exit_on_bad_args(sys.argv, prog=prog, default_config=default_config)
    try:
        app.run(main)
    except SystemExit as e:
        if asked_for_help(sys.argv) and e.code in (1, None):
            raise SystemExit(0) from None
        raise


def console_logging() -> None:
    """omni_jax's INFO lines on the console, once each; absl (Orbax logs every file it writes at
    INFO) kept at WARNING."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("omni_jax")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # absl's root handler would print each line again
