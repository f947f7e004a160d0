# Structured logging into the host's tracing subscriber (the `log` capability).


# Imported when the component is made (componentize-py snapshots the
# interpreter after importing app.py): there is no file system at run time to
# import from. None when the plugin does not list `log`.
try:
    from wit_world.imports import log as _IFACE
except ImportError:
    _IFACE = None


def _wit():
    return _IFACE


def _log(level_name: str, message: str) -> None:
    wit = _wit()
    if wit is None:
        return
    level = getattr(wit.Level, level_name)
    if wit.enabled(level):
        wit.log(level, message)


def trace(message: str) -> None:
    _log("TRACE", message)


def debug(message: str) -> None:
    _log("DEBUG", message)


def info(message: str) -> None:
    _log("INFO", message)


def warn(message: str) -> None:
    _log("WARN", message)


def error(message: str) -> None:
    _log("ERROR", message)
