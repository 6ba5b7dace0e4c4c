"""How the data layer's messages name a setting: the command-line flag and the YAML key, so a hint works for a user
of either."""

from __future__ import annotations

from transferlab.config import flag_name

__all__ = ["setting_hint"]


def setting_hint(setting: str, value: str | None = None) -> str:
    """``"--skip-bad-files (skip_bad_files: true in YAML)"`` for ``setting_hint("skip_bad_files", "true")``; with a
    placeholder value, ``"--text-column NAME (text_column: NAME in YAML)"``; without a value, ``"--max-seconds
    (max_seconds in YAML)"``.

    Args:
        setting: the setting's field name (its YAML key).
        value: the value to give, shown as the YAML value; a flag's value is shown too unless it is ``"true"``
            (boolean flags take none).
    """
    flag = flag_name(setting)
    if value is None:
        return f"{flag} ({setting} in YAML)"
    shown = flag if value == "true" else f"{flag} {value}"
    return f"{shown} ({setting}: {value} in YAML)"
