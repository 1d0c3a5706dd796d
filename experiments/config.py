"""Session configuration: a TOML file, validated key by key, with command-line overrides.

The default configuration is ``experiments/expression_task.toml``; it is also the list
of every key a configuration may set. A user file only needs the keys it changes: it is
merged over the defaults, unknown keys are rejected (a typo must not be ignored), and
every value is checked against its expected type and range. Errors name the key, the
value given and what was expected::

    ConfigError: config key 'quest.pThreshold' must be a number in (0, 1), got 1.5

Everything that could otherwise fail once the window is open is checked here too: each
screen's text is formatted with sample values (a placeholder the screen does not fill,
such as ``{contnue_key}``, or a stray brace fails at once), ``expName`` must be usable
as a file name part (letters, digits, '_' and '-'), and the bubble counts must fit in
the images' pixels (:func:`check_bubble_counts`; for a stimulus folder the session
checks them once the images are loaded, still before anything opens).

The ``[scanner]`` table (off unless ``scanner.enabled`` or ``bubbles run --scanner``)
is checked key by key like the rest, and when it is on, across keys too
(:func:`check_scanner`): a trigger key that is also a response, continue or quit key,
ITIs that make no truncated exponential, an onset file that does not give every run
its onsets, runs that do not fit ``scanner.volumes``.

Examples
--------
>>> from experiments.config import load_config
>>> cfg = load_config(overrides={"trials.main": 40})
>>> cfg["trials"]["main"], cfg["quest"]["pThreshold"]
(40, 0.75)
"""

from __future__ import annotations

import copy
import math
import os
import tomllib
from pathlib import Path

from bubbles.faces import MIN_SIZE as FACES_MIN_SIZE
from bubbles.spec import APERTURES, OVERLAPS, POLARITIES, BubbleSpec

from .datafile import validate_name
from .schedule import (MIN_ITI, block_schedules, iti_values, read_onset_file,
                       trial_slot)

__all__ = ["ConfigError", "DEFAULT_CONFIG", "TEXT_FIELDS", "ADDED_KEYS", "load_config",
           "validate_config", "default_config", "check_bubble_counts", "check_scanner"]

#: Path of the default configuration (the expression task).
DEFAULT_CONFIG = Path(__file__).with_name("expression_task.toml")


#: The fields each screen's text is formatted with (``{mapping}`` is the participant's
#: key mapping, ``{continue_key}`` the key that advances, ``{done}`` / ``{total}`` the
#: main trials done and planned).
TEXT_FIELDS = {"instructions": ("mapping", "continue_key"),
               "practice_done": ("mapping", "continue_key"),
               "break_message": ("mapping", "continue_key", "done", "total"),
               "end": ("mapping", "continue_key"),
               "scanner_wait": ("mapping", "continue_key", "run", "runs"),
               "run_done": ("mapping", "continue_key", "done", "runs")}
_TEXT_SAMPLE = {"mapping": "happy: press F", "continue_key": "SPACE", "done": 75,
                "total": 300, "run": 2, "runs": 4}
#: Keys added after sessions were first recorded: a recorded configuration without
#: them (a session started with an older release, resumed now) gets their defaults,
#: which keep the behavioural session as it was (the scanner mode off).
ADDED_KEYS = ("scanner", "text.scanner_wait", "text.run_done", "bubbles.sampling",
              "bubbles.update_every", "bubbles.floor")

class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _fail(key, expected, value):
    raise ConfigError(f"config key '{key}' must be {expected}, got {value!r}")


# -- value checkers: (key, value) -> normalised value ----------------------------------
def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _file_name(key, v):
    try:
        return validate_name(v, name=f"config key '{key}'")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _string(key, v):
    if not isinstance(v, str) or not v.strip():
        _fail(key, "a non-empty string", v)
    return v


def _text(key, v):
    if not isinstance(v, str):
        _fail(key, "a string", v)
    return v


def _boolean(key, v):
    if not isinstance(v, bool):
        _fail(key, "true or false", v)
    return v


def _int(lo, hi=None):
    def check(key, v):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None
                                                                     and v > hi):
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            _fail(key, f"an integer {rng}", v)
        return v
    return check


def _number(lo=None, hi=None, *, open_lo=False, open_hi=False):
    def check(key, v):
        ok = _is_num(v)
        if ok and lo is not None:
            ok = v > lo if open_lo else v >= lo
        if ok and hi is not None:
            ok = v < hi if open_hi else v <= hi
        if not ok:
            if lo is not None and hi is not None:
                rng = f" in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"
            elif lo is not None:
                rng = f" {'>' if open_lo else '>='} {lo}"
            else:
                rng = ""
            _fail(key, f"a number{rng}", v)
        return float(v)
    return check


def _choice(*allowed):
    def check(key, v):
        if v not in allowed:
            _fail(key, f"one of {list(allowed)}", v)
        return v
    return check


def _key_list(key, v):
    if (not isinstance(v, list) or len(v) < 2
            or not all(isinstance(k, str) and k.strip() for k in v)):
        _fail(key, "a list of at least 2 key names (strings)", v)
    if len(set(v)) != len(v):
        _fail(key, "a list of distinct key names", v)
    return list(v)


def _str_list(key, v):
    if not isinstance(v, list) or not all(isinstance(k, str) and k for k in v):
        _fail(key, "a list of strings ([] for all)", v)
    if len(set(v)) != len(v):
        _fail(key, "a list of distinct strings", v)
    return list(v)


def _win_size(key, v):
    if (not isinstance(v, list) or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 16
                       for x in v)):
        _fail(key, "[width, height] in pixels, two integers >= 16", v)
    return list(v)


def _sigma(key, v):
    if _is_num(v) and v > 0:
        return float(v)
    if isinstance(v, list) and v and all(_is_num(x) and x > 0 for x in v):
        return [float(x) for x in v]
    _fail(key, "a number > 0 (pixels) or a list of them, one per band", v)


def _bubble_count(key, v):
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
        return v
    if (isinstance(v, list) and v
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)):
        return list(v)
    _fail(key, "an integer >= 1 or a list of integers >= 0, one per band", v)


def _background(key, v):
    if v in ("mean", "noise") or (_is_num(v) and 0 <= v <= 1):
        return v
    _fail(key, "'mean', 'noise' or a grey level in [0, 1]", v)


SCHEMA = {
    "expName": _file_name,
    "seed": _int(0, 2 ** 32 - 1),
    "stimuli.source": _string,
    "stimuli.n_identities": _int(1),
    "stimuli.size": _int(FACES_MIN_SIZE, 4096),
    "stimuli.expressions": _str_list,
    "responses.keys": _key_list,
    "responses.counterbalance": _boolean,
    "responses.continue_key": _string,
    "responses.quit_key": _string,
    "bubbles.sigma": _sigma,
    "bubbles.n_bubbles": _bubble_count,
    "bubbles.bands": _int(0, 8),
    # the choices BubbleSpec itself accepts (one list, in bubbles.spec)
    "bubbles.aperture": _choice(*APERTURES),
    "bubbles.polarity": _choice(*POLARITIES),
    "bubbles.overlap": _choice(*OVERLAPS),
    "bubbles.background": _background,
    "bubbles.sampling": _choice("uniform", "adaptive"),
    "bubbles.update_every": _int(1),
    "bubbles.floor": _number(0, 1, open_lo=True),
    "trials.practice": _int(0),
    "trials.practice_bubbles": _int(0),
    "trials.main": _int(0),
    "trials.break_every": _int(0),
    "trials.feedback_practice": _boolean,
    "trials.feedback_main": _boolean,
    "trials.feedback_frames": _int(0),
    "timing.fixation_frames": _int(0),
    "timing.stimulus_frames": _int(0),
    "timing.response_timeout": _number(0),
    "timing.iti_frames": _int(0),
    "quest.start": _number(0, open_lo=True),
    "quest.start_sd": _number(0, open_lo=True),
    "quest.pThreshold": _number(0, 1, open_lo=True, open_hi=True),
    "quest.gamma": _number(0, 1, open_hi=True),
    "quest.beta": _number(0, open_lo=True),
    "quest.delta": _number(0, 0.5, open_hi=True),
    "quest.grain": _number(0, 1, open_lo=True),
    "quest.min_bubbles": _int(1),
    "quest.max_bubbles": _int(1),
    "window.size": _win_size,
    "window.fullscreen": _boolean,
    "window.screen": _int(0),
    "window.color": _number(0, 1),
    "window.frame_rate": _number(0),
    "window.monitor_width_cm": _number(0, open_lo=True),
    "window.monitor_distance_cm": _number(0, open_lo=True),
    "window.stimulus_size_deg": _number(0),
    "text.instructions": _text,
    "text.practice_done": _text,
    "text.break_message": _text,
    "text.end": _text,
    "text.scanner_wait": _text,
    "text.run_done": _text,
    "scanner.enabled": _boolean,
    "scanner.tr": _number(0, open_lo=True),
    "scanner.trigger_key": _string,
    "scanner.dummy_volumes": _int(0),
    "scanner.volumes": _int(0),
    "scanner.runs": _int(1),
    "scanner.trials_per_run": _int(1),
    "scanner.stimulus_duration": _number(0, open_lo=True),
    "scanner.response_window": _number(0, open_lo=True),
    "scanner.iti_min": _number(MIN_ITI),
    "scanner.iti_mean": _number(MIN_ITI),
    "scanner.iti_max": _number(MIN_ITI),
    "scanner.onset_file": _text,
    "scanner.lead_in": _number(0),
    "scanner.lead_out": _number(0),
    "scanner.n_bubbles": _int(0),
    "scanner.quest": _boolean,
    "scanner.repeat_interrupted": _boolean,
}


def _read_toml(path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None


def default_config():
    """The default configuration as a nested dict (a fresh copy)."""
    return _read_toml(DEFAULT_CONFIG)


def _merge(base, update, prefix=""):
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            allowed = sorted(k for k in base)
            where = f"section '{prefix[:-1]}'" if prefix else "the top level"
            raise ConfigError(f"unknown config key '{dotted}'; keys allowed in {where}: "
                              f"{allowed}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                _fail(dotted, "a table (section)", value)
            _merge(base[key], value, dotted + ".")
        else:
            base[key] = value


def _set_dotted(cfg, dotted, value):
    parts = dotted.split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"unknown config key '{dotted}': "
                              f"'{'.'.join(parts[:i + 1])}' is not a section")
        node = node[part]
    if parts[-1] not in node or isinstance(node[parts[-1]], dict):
        raise ConfigError(f"unknown config key '{dotted}'")
    node[parts[-1]] = value


def _absolute_source(source, base_dir):
    """``stimuli.source`` with a relative folder made absolute (from ``base_dir``);
    ``"faces"`` and absolute folders unchanged."""
    if not isinstance(source, str) or source == "faces" or os.path.isabs(source):
        return source
    return os.path.abspath(os.path.join(base_dir, source))


def validate_config(cfg):
    """Check every key of a merged configuration; return a normalised deep copy.

    A relative ``stimuli.source`` folder is made absolute from the working directory
    (:func:`load_config` first makes one set in a file absolute from the file's
    folder), so the sidecar records where the images were, whatever the directory a
    resume or an analysis later runs in.

    Raises
    ------
    ConfigError
        Naming the key, the expected value and the value given.
    """
    cfg = copy.deepcopy(cfg)
    _add_new_keys(cfg)
    for dotted, check in SCHEMA.items():
        node = cfg
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"config key '{dotted}' is missing")
        node[parts[-1]] = check(dotted, node[parts[-1]])
    cfg["stimuli"]["source"] = _absolute_source(cfg["stimuli"]["source"], os.getcwd())
    q, t = cfg["quest"], cfg["trials"]
    if q["max_bubbles"] <= q["min_bubbles"]:
        _fail("quest.max_bubbles", f"greater than quest.min_bubbles "
              f"({q['min_bubbles']})", q["max_bubbles"])
    if not q["min_bubbles"] <= q["start"] <= q["max_bubbles"]:
        _fail("quest.start", f"between quest.min_bubbles and quest.max_bubbles "
              f"([{q['min_bubbles']}, {q['max_bubbles']}])", q["start"])
    if t["practice"] + t["main"] < 1:
        _fail("trials.main", "at least 1 when trials.practice is 0", t["main"])
    exprs = cfg["stimuli"]["expressions"]
    keys = cfg["responses"]["keys"]
    if exprs and len(exprs) > len(keys):
        _fail("responses.keys", f"at least one key per expression ({len(exprs)}: "
              f"{exprs})", keys)
    if exprs and len(exprs) < 2:
        _fail("stimuli.expressions", "at least 2 labels (a choice task)", exprs)
    if cfg["responses"]["quit_key"] in keys:
        _fail("responses.keys", f"keys other than responses.quit_key "
              f"({cfg['responses']['quit_key']!r})", keys)
    b = cfg["bubbles"]
    for name in ("sigma", "n_bubbles"):
        if isinstance(b[name], list):
            if b["bands"] == 0 and len(b[name]) != 1:
                _fail(f"bubbles.{name}", "a single value when bubbles.bands is 0", b[name])
            if b["bands"] > 0 and len(b[name]) != b["bands"]:
                _fail(f"bubbles.{name}", f"a scalar or one value per band "
                      f"({b['bands']})", b[name])
    for key in TEXT_FIELDS:
        _check_text(key, cfg["text"][key])
    if cfg["scanner"]["onset_file"]:
        cfg["scanner"]["onset_file"] = _absolute_source(cfg["scanner"]["onset_file"],
                                                        os.getcwd())
    if cfg["scanner"]["enabled"]:
        if b["sampling"] != "uniform":
            _fail("bubbles.sampling", "'uniform' in the scanner mode (adaptive sampling "
                  "is for behavioural sessions)", b["sampling"])
        check_scanner(cfg)
    if cfg["stimuli"]["source"] == "faces":
        size = cfg["stimuli"]["size"]
        check_bubble_counts(cfg, (size, size))
    return cfg


def _add_new_keys(cfg):
    """Give a configuration without the keys of :data:`ADDED_KEYS` their defaults."""
    if not isinstance(cfg, dict):
        return
    defaults = None
    for dotted in ADDED_KEYS:
        *parents, last = dotted.split(".")
        node = cfg
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last not in node:
            if defaults is None:
                defaults = default_config()
            value = defaults
            for part in dotted.split("."):
                value = value[part]
            node[last] = copy.deepcopy(value)


def check_scanner(cfg):
    """The checks of the ``[scanner]`` table that involve several keys (ConfigError).

    The trigger key must differ from every key the session listens to; the ITIs must
    make a truncated exponential (``iti_min <= iti_mean <= (iti_min + iti_max) / 2``);
    an onset file must give ``trials_per_run`` increasing onsets per run; and the runs
    must fit in ``scanner.volumes`` when it is set. Called by :func:`validate_config`
    when the scanner mode is on.
    """
    sc, keys = cfg["scanner"], cfg["responses"]
    trigger = sc["trigger_key"]
    if trigger in keys["keys"]:
        _fail("scanner.trigger_key", f"a key that is not a response key "
              f"(responses.keys = {keys['keys']}): a trigger would count as an answer",
              trigger)
    for name in ("quit_key", "continue_key"):
        if trigger == keys[name]:
            _fail("scanner.trigger_key", f"a key other than responses.{name} "
                  f"({keys[name]!r})", trigger)
    if sc["iti_max"] < sc["iti_min"]:
        _fail("scanner.iti_max", f"at least scanner.iti_min ({sc['iti_min']})",
              sc["iti_max"])
    slot = trial_slot(sc["stimulus_duration"], sc["response_window"])
    onsets = None
    if sc["onset_file"]:
        try:
            onsets = read_onset_file(sc["onset_file"], runs=sc["runs"],
                                     trials_per_run=sc["trials_per_run"], slot=slot)
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config key 'scanner.onset_file' must name a readable "
                              f"file, got {sc['onset_file']!r}: {err}") from None
        except ValueError as err:
            raise ConfigError(str(err)) from None
    else:
        low, mean, high = sc["iti_min"], sc["iti_mean"], sc["iti_max"]
        if high == low and mean != low:
            _fail("scanner.iti_mean", f"equal to scanner.iti_min and scanner.iti_max "
                  f"when they are equal ({low})", mean)
        if high > low and not low < mean <= (low + high) / 2:
            _fail("scanner.iti_mean", f"in ({low:g}, {(low + high) / 2:g}]: the mean of "
                  f"an exponential truncated to [scanner.iti_min, scanner.iti_max] = "
                  f"[{low:g}, {high:g}] lies above the minimum and at most halfway",
                  mean)
        iti_values(1, iti_min=low, iti_mean=mean, iti_max=high)
    need = max(s.n_volumes for s in block_schedules({**sc, "volumes": 0}, 0, onsets))
    if sc["volumes"] and need > sc["volumes"]:
        _fail("scanner.volumes", f"at least the {need} volumes the runs need (lead_in "
              f"{sc['lead_in']:g} s, {sc['trials_per_run']} trials of {slot:g} s with "
              f"their ITIs, lead_out {sc['lead_out']:g} s, at TR {sc['tr']:g} s): the "
              f"trials do not fit the run", sc["volumes"])


def _check_text(key, template):
    """Format a screen's text with sample values of the fields the session fills."""
    fields = TEXT_FIELDS[key]
    allowed = ", ".join("{" + f + "}" for f in fields)
    try:
        template.format(**{f: _TEXT_SAMPLE[f] for f in fields})
    except KeyError as err:
        raise ConfigError(f"config key 'text.{key}' uses the placeholder "
                          f"{{{err.args[0]}}}, which this screen does not fill; "
                          f"placeholders allowed here: {allowed} (write {{{{ and }}}} for "
                          f"a literal brace)") from None
    except (IndexError, ValueError, AttributeError, TypeError) as err:
        raise ConfigError(f"config key 'text.{key}' is not a valid text: {err}; "
                          f"placeholders allowed here: {allowed} (write {{{{ and }}}} for "
                          f"a literal brace)") from None


def check_bubble_counts(cfg, shape):
    """Refuse bubble counts that the images cannot hold (ConfigError naming the key).

    A band's bubble centres are distinct pixels, so ``bubbles.n_bubbles``,
    ``trials.practice_bubbles`` and ``quest.max_bubbles`` (the most QUEST may ask for)
    must put at most ``H * W`` bubbles in every band. :func:`validate_config` calls it
    for the embedded faces (``stimuli.size`` squared); a session calls it again with the
    shape of the images it loaded, before anything opens.
    """
    h, w = (int(x) for x in shape)
    b, pixels = cfg["bubbles"], h * w
    counts = [("bubbles.n_bubbles", b["n_bubbles"]),
              ("quest.max_bubbles", cfg["quest"]["max_bubbles"])]
    if cfg["trials"]["practice_bubbles"]:
        counts.append(("trials.practice_bubbles", cfg["trials"]["practice_bubbles"]))
    if cfg["scanner"]["n_bubbles"]:
        counts.append(("scanner.n_bubbles", cfg["scanner"]["n_bubbles"]))
    for key, n in counts:
        try:
            most = max(BubbleSpec(shape=(h, w), sigma=b["sigma"], n_bubbles=n,
                                  bands=b["bands"] or None).n_per_band)
        except ValueError:
            most = None
        if most is None or most > pixels:
            _fail(key, f"a count that puts at most {pixels} bubbles in each band (the "
                       f"{h} x {w} images have {pixels} pixels, and a band's bubble "
                       f"centres are distinct pixels)", n)


def load_config(path=None, overrides=None):
    """Load, merge and validate a session configuration.

    Parameters
    ----------
    path : str or Path, optional
        A TOML file; keys it sets replace the defaults of
        ``experiments/expression_task.toml``. None uses the defaults.
    overrides : dict, optional
        Dotted keys to values applied last (the command line uses it):
        ``{"trials.main": 40, "window.fullscreen": False}``.

    A relative folder in ``stimuli.source`` becomes an absolute path: relative to the
    file's folder when the file sets it, else to the working directory (an override).

    Returns
    -------
    dict
        The nested, validated configuration.

    Raises
    ------
    ConfigError
        An unreadable file, an unknown key or a bad value (the message names the key).
    """
    cfg = default_config()
    if path is not None:
        _merge(cfg, _read_toml(path))
        # a folder named in the file is relative to the file, not to where it is run
        cfg["stimuli"]["source"] = _absolute_source(cfg["stimuli"]["source"],
                                                    Path(path).parent)
        if cfg["scanner"]["onset_file"]:
            cfg["scanner"]["onset_file"] = _absolute_source(
                cfg["scanner"]["onset_file"], Path(path).parent)
    for dotted, value in (overrides or {}).items():
        _set_dotted(cfg, dotted, value)
    return validate_config(cfg)
