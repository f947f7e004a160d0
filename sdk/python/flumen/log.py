# Structured logging into the host's tracing subscriber (the `log` capability).


def _wit():
    try:
        from wit_world.imports import log
    except ImportError:
        return None
    return log


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
