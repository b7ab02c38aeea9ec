"""Per-user settings of the viewer, kept as JSON in the user config dir (Qt-free).

    settings, warnings = Settings.load()     # never raises for a bad file; warnings are sentences
    settings.add_recent_folder("/data/cxr")
    settings.save()                          # atomic: temporary file, then rename

The file is `$CXRVIEWER_CONFIG_DIR/settings.json`, else `$XDG_CONFIG_HOME/cxrviewer/settings.json`,
else `~/.config/cxrviewer/settings.json`. Every field is validated on load; a field that is
missing takes its default silently, a field that is malformed takes its default with a warning.
When anything was wrong (unreadable JSON, a malformed field), the original file is kept beside
as `settings.json.bad` and a repaired file is written, so a warning is reported once, not at every
start. Keys this version does not know are kept and written back (a newer version's settings
survive a run of an older one).
"""

from __future__ import annotations

import getpass
import json
import math
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cxrviewer.errors import CxrError

SETTINGS_FILE = "settings.json"
DEVICES = ("auto", "cpu", "cuda")
MAX_RECENT = 10
SETTINGS_VERSION = 1


class SettingsError(CxrError):
    """The settings file cannot be written."""


def config_dir() -> Path:
    """`$CXRVIEWER_CONFIG_DIR`, else `$XDG_CONFIG_HOME/cxrviewer`, else `~/.config/cxrviewer`."""
    env = os.environ.get("CXRVIEWER_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".config") / "cxrviewer"


def settings_path() -> Path:
    """Where `Settings.load()` and `save()` read and write by default."""
    return config_dir() / SETTINGS_FILE


def default_store_path() -> Path:
    """The annotation store used until the user picks another: `<user data dir>/annotations.db`."""
    from cxrviewer.models.registry import user_data_dir

    return user_data_dir() / "annotations.db"


def _default_annotator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (containers without a passwd entry)
        return ""


def normalize_folder(folder: str | Path) -> str:
    """The form folders are compared and stored in: absolute, user-expanded, symlinks resolved."""
    return str(Path(folder).expanduser().resolve())


@dataclass
class Settings:
    """Everything the viewer remembers between sessions (see the module docstring)."""

    annotator: str = field(default_factory=_default_annotator)
    store_path: Path = field(default_factory=default_store_path)
    model: str = "default"  # registered model name or model file path
    device: str = "auto"  # auto | cpu | cuda
    cam_method: str = "gradcam"
    box_method: str = "scalp"
    thresholds: dict[str, float] = field(default_factory=dict)  # finding -> probability threshold override
    analyse_on_open: bool = True
    recent_folders: list[str] = field(default_factory=list)  # most recent first
    heatmap_opacity: float = 0.5  # 0 (invisible) .. 1 (opaque)
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # keys from newer versions, kept

    # -- recent folders -------------------------------------------------------------------------
    def add_recent_folder(self, folder: str | Path) -> None:
        """Put `folder` first; drop its older entry and anything past the tenth."""
        key = normalize_folder(folder)
        self.recent_folders = [key] + [f for f in self.recent_folders if f != key]
        del self.recent_folders[MAX_RECENT:]

    def threshold(self, finding: str, model_threshold: float) -> float:
        """The user's override for `finding`, else the model's own operating threshold."""
        return self.thresholds.get(finding, model_threshold)

    # -- persistence ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name != "extra":
                value = getattr(self, f.name)
                data[f.name] = str(value) if isinstance(value, Path) else value
        data["version"] = SETTINGS_VERSION
        return data

    def save(self, path: str | Path | None = None) -> Path:
        """Write atomically (a temporary file in the same folder, then rename); returns the path."""
        path = Path(path) if path is not None else settings_path()
        text = json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise SettingsError(path, f"the settings cannot be saved ({exc.strerror or exc})") from exc
        return path

    @classmethod
    def load(cls, path: str | Path | None = None) -> tuple[Settings, list[str]]:
        """(settings, warnings). Never raises for a missing, unreadable, corrupt or malformed file.

        A missing file gives the defaults and no warning. Each warning is one sentence naming the
        file and the problem; the original file of any problem is kept as `settings.json.bad`.
        """
        path = Path(path) if path is not None else settings_path()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(), []
        except UnicodeDecodeError:
            return cls(), _keep_bad(path, "the settings file is not UTF-8 text; using the defaults", cls())
        except OSError as exc:  # not the file's fault (permissions, a folder): leave it where it is
            return cls(), [CxrError(path, f"the settings file cannot be read ({exc.strerror or exc}); "
                                          "using the defaults").sentence]
        try:
            data = json.loads(text)
        except ValueError as exc:
            return cls(), _keep_bad(path, f"the settings file is not valid JSON ({exc.msg} at line {exc.lineno}); "
                                          "using the defaults", cls())
        if not isinstance(data, dict):
            return cls(), _keep_bad(path, "the settings file does not hold a JSON object; using the defaults", cls())
        settings, problems = from_mapping(data)
        if not problems:
            return settings, []
        sentence = f"{'; '.join(problems)}; using the default{'s' if len(problems) > 1 else ''}"
        return settings, _keep_bad(path, sentence, settings)


def _keep_bad(path: Path, problem: str, repaired: Settings) -> list[str]:
    """Move the bad file to `<name>.bad`, write the repaired settings; the warning sentences."""
    warnings = [CxrError(path, f"{problem} (the old file is kept as {path.name}.bad)").sentence]
    try:
        os.replace(path, path.with_name(path.name + ".bad"))
    except OSError as exc:
        warnings[0] = CxrError(path, f"{problem} (the old file could not be kept: {exc.strerror or exc})").sentence
        return warnings
    try:
        repaired.save(path)
    except SettingsError as exc:
        warnings.append(exc.sentence)
    return warnings


# -- validation of each field ---------------------------------------------------------------------

def _text(value: Any, name: str, allowed: tuple[str, ...] = (), empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not empty_ok and not value.strip()):
        raise ValueError(f"'{name}' must be {'a' if empty_ok else 'a non-empty'} string, not {_show(value)}")
    if allowed and value not in allowed:
        raise ValueError(f"'{name}' must be one of {', '.join(allowed)}, not {_show(value)}")
    return value.strip()


def _probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"'{name}' must be a number from 0 to 1, not {_show(value)}")
    return float(value)


def _thresholds(value: Any, problems: list[str]) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError(f"'thresholds' must be an object of finding: probability, not {_show(value)}")
    out: dict[str, float] = {}
    for finding, threshold in value.items():
        try:
            out[_text(finding, "thresholds key")] = _probability(threshold, f"thresholds.{finding}")
        except ValueError as exc:
            problems.append(str(exc))
    return out


def _recent(value: Any, problems: list[str]) -> list[str]:
    """Valid, existing, distinct folders in order, at most MAX_RECENT; missing ones dropped quietly."""
    if not isinstance(value, list):
        raise ValueError(f"'recent_folders' must be a list of folders, not {_show(value)}")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            problems.append(f"'recent_folders' holds {_show(item)}, which is not a folder")
            continue
        try:
            key = normalize_folder(item)
            exists = Path(key).is_dir()
        except (OSError, RuntimeError, ValueError):  # unresolvable (loops, NUL bytes)
            exists = False
        if exists and key not in out:
            out.append(key)
    return out[:MAX_RECENT]


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"'{name}' must be true or false, not {_show(value)}")
    return value


def _path(value: Any, name: str) -> Path:
    return Path(_text(value, name)).expanduser()


_VALIDATORS = {
    "annotator": lambda v, p: _text(v, "annotator", empty_ok=True),
    "store_path": lambda v, p: _path(v, "store_path"),
    "model": lambda v, p: _text(v, "model"),
    "device": lambda v, p: _text(v, "device", DEVICES),
    "cam_method": lambda v, p: _text(v, "cam_method"),
    "box_method": lambda v, p: _text(v, "box_method"),
    "thresholds": _thresholds,
    "analyse_on_open": lambda v, p: _bool(v, "analyse_on_open"),
    "recent_folders": _recent,
    "heatmap_opacity": lambda v, p: _probability(v, "heatmap_opacity"),
}


def from_mapping(data: dict[str, Any]) -> tuple[Settings, list[str]]:
    """Settings from a parsed JSON object: (settings, problems as clauses). Bad fields take defaults."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, validate in _VALIDATORS.items():
        if name in data:
            try:
                values[name] = validate(data[name], problems)
            except ValueError as exc:
                problems.append(str(exc))
    extra = {k: v for k, v in data.items() if k not in _VALIDATORS and k not in ("version", "extra")}
    return Settings(**values, extra=extra), problems


def _show(value: Any, limit: int = 40) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
