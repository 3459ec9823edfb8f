"""Reference Asterisk configuration shipped with the dialer: the IVR dialplan and manager.conf.

`dialer asterisk-config` prints them; the PBX simulator plays the same IVR and emits the same
UserEvents.
"""

from __future__ import annotations

from importlib import resources

FILES = ("dialer-ivr.conf", "manager.conf")


def reference_file(name: str) -> str:
    """The text of one reference file (a name from `FILES`)."""
    if name not in FILES:
        raise ValueError(f"no reference file {name!r}; known: {', '.join(FILES)}")
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
